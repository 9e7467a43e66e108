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

import orjson

from streamctl.errors import EventError, UsageError
from streamctl.events import Event
from streamctl.sources.normalise import normalise

DEFAULT_CHUNK = 5_000
READ_HINT = 4 * 1024 * 1024  # bytes per read: a few thousand typical events


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class NdjsonChunk:
    events: list[Event] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line number of each event
    bad: list[BadLine] = field(default_factory=list)
    bytes_read: int = 0


def read_ndjson(path: Path, chunk_size: int = DEFAULT_CHUNK) -> Iterator[NdjsonChunk]:
    """Normalised events of an NDJSON file in chunks of up to `chunk_size` lines' events."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror or exc}"
        raise UsageError(msg) from exc
    with handle:
        line_number = 0
        chunk = NdjsonChunk()
        offset = 0
        while True:
            lines = handle.readlines(READ_HINT)
            if not lines:
                break
            received_at = datetime.now(UTC)
            for raw in lines:
                line_number += 1
                offset += len(raw)
                _parse_line(raw, line_number, received_at, chunk)
                if len(chunk.events) >= chunk_size:
                    chunk.bytes_read = offset
                    yield chunk
                    chunk = NdjsonChunk()
        chunk.bytes_read = offset
        if chunk.events or chunk.bad:
            yield chunk


def _parse_line(raw: bytes, line_number: int, received_at: datetime, chunk: NdjsonChunk) -> None:
    if not raw.strip():
        return
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        chunk.bad.append(BadLine(line_number, f"not valid JSON: {exc}"))
        return
    if not isinstance(event, dict):
        chunk.bad.append(
            BadLine(line_number, f"expected a JSON object, got {type(event).__name__}")
        )
        return
    try:
        chunk.events.append(normalise(event, received_at=received_at))
    except EventError as exc:
        chunk.bad.append(BadLine(line_number, str(exc)))
        return
    chunk.lines.append(line_number)
