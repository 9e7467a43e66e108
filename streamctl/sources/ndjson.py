"""NDJSON files as a source (`streamctl replay`): streamed in chunks, never loaded whole.

    for chunk in read_ndjson(Path("events.ndjson"), chunk_size=5000):
        chunk.events        # normalised events, ready for the pipeline
        chunk.bad           # BadLine(line, message) for each line that is not a valid event
        chunk.bytes_read    # file offset reached, for progress bars

Memory stays flat with the file's size: one chunk of lines at a time. Blank lines
are skipped; a line that is not JSON, not an object, or not a valid Segment event
(SPEC §4 normalisation) is reported with its line number and the rest go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from streamctl.core.errors import EventError, UsageError
from streamctl.core.events import Event
from streamctl.sources.normalise import normalise

DEFAULT_CHUNK = 5_000
READ_HINT = 4 * 1024 * 1024  # bytes per read: a few thousand typical events


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based
    message: str
    column: int | None = None  # 1-based, within the line, when the parser names one

    def __str__(self) -> str:
        return f"line {self.where()}: {self.message}"

    def where(self) -> str:
        """`LINE` or `LINE:COLUMN`, as editors and `validate` locate a problem."""
        return str(self.line) if self.column is None else f"{self.line}:{self.column}"


@dataclass
class NdjsonChunk:
    events: list[Event] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line number of each event
    bad: list[BadLine] = field(default_factory=list)
    bytes_read: int = 0


def read_ndjson(path: Path, chunk_size: int = DEFAULT_CHUNK) -> Iterator[NdjsonChunk]:
    """Normalised events of an NDJSON file in chunks of up to `chunk_size` lines."""
    for raw in read_lines(path, chunk_size):
        chunk = parse_lines(raw.lines, raw.first_line)
        chunk.bytes_read = raw.bytes_read
        yield chunk


@dataclass(frozen=True)
class RawChunk:
    first_line: int  # the 1-based number of lines[0]
    lines: list[bytes]
    bytes_read: int


def open_events_file(path: Path) -> BinaryIO:
    """The NDJSON file opened for reading; a UsageError naming it when it cannot be."""
    try:
        return path.open("rb")
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror or exc}"
        raise UsageError(msg) from exc


def read_lines(path: Path, chunk_size: int = DEFAULT_CHUNK) -> Iterator[RawChunk]:
    """The file's lines, unparsed, `chunk_size` at a time, with the bytes read so far
    (replay's worker processes read byte ranges instead: parallel.byte_ranges)."""
    with open_events_file(path) as handle:
        first_line = 1
        offset = 0
        pending: list[bytes] = []
        while True:
            lines = handle.readlines(READ_HINT)
            if not lines:
                break
            pending.extend(lines)
            while len(pending) >= chunk_size:
                chunk, pending = pending[:chunk_size], pending[chunk_size:]
                offset += sum(map(len, chunk))
                yield RawChunk(first_line, chunk, offset)
                first_line += len(chunk)
        if pending:
            offset += sum(map(len, pending))
            yield RawChunk(first_line, pending, offset)


def parse_lines(lines: list[bytes], first_line: int) -> NdjsonChunk:
    """Parse and normalise lines; bad ones are reported with their line numbers."""
    chunk = NdjsonChunk()
    received_at = datetime.now(UTC)
    for number, raw in enumerate(lines, start=first_line):
        _parse_line(raw, number, received_at, chunk)
    return chunk


def _parse_line(raw: bytes, line_number: int, received_at: datetime, chunk: NdjsonChunk) -> None:
    if not raw.strip():
        return
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # The parser counts lines and columns within what it was given, one line of the
        # file: its own "line 1 column 27 (char 26)" would repeat the location, wrongly.
        line = line_number + exc.lineno - 1
        chunk.bad.append(BadLine(line, f"not valid JSON: {exc.msg}", column=exc.colno))
        return
    if not isinstance(event, dict):
        chunk.bad.append(
            BadLine(line_number, f"expected a JSON object, got {type(event).__name__}")
        )
        return
    try:
        chunk.events.append(normalise(event, received_at=received_at, text_length=len(raw)))
    except EventError as exc:
        chunk.bad.append(BadLine(line_number, str(exc)))
        return
    chunk.lines.append(line_number)
