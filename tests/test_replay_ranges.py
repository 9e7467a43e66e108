"""How replay cuts a file among its worker processes: byte ranges, each worker taking
the lines that start in its own (streamctl.delivery.parallel)."""

from __future__ import annotations

import pytest

from streamctl.delivery.parallel import byte_ranges, lines_starting_in

# Blank lines, a line longer than many ranges, a last line without its newline.
LINES = [b'{"a":1}', b"", b'{"b":"' + b"x" * 120 + b'"}', b"{}", b"", b"", b'{"c":[1,2]}', b"z"]


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_every_line_is_taken_once_whatever_the_ranges(tmp_path, trailing_newline):
    content = b"\n".join(LINES) + (b"\n" if trailing_newline else b"")
    path = tmp_path / "events.ndjson"
    path.write_bytes(content)
    with path.open("rb") as handle:
        for step in range(1, len(content) + 2):
            taken = [
                line
                for start in range(0, len(content), step)
                for line in lines_starting_in(handle, start, min(len(content), start + step))
            ]
            assert taken == LINES, f"ranges of {step} bytes"


def test_ranges_hold_about_the_lines_asked_for_and_cover_the_file(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(b'{"n":%05d}\n' % n for n in range(1000)))  # 12 bytes a line
    ranges = list(byte_ranges(path, 100))
    assert ranges[0] == (0, 1200)
    assert [end for _, end in ranges[:-1]] == [start for start, _ in ranges[1:]]
    assert ranges[-1][1] == path.stat().st_size
    with path.open("rb") as handle:
        counts = [len(lines_starting_in(handle, start, end)) for start, end in ranges]
    assert counts == [100] * 10


def test_an_empty_file_has_no_ranges(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"")
    assert list(byte_ranges(path, 5000)) == []
