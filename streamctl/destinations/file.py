"""`file`: append payloads as NDJSON to a local file (SPEC §6).

One JSON object a line, in delivery order. A relative `path` is resolved against the
project root by the loader; missing parent folders are created.

    destinations:
      local-file:
        type: file
        config: { path: out/events.ndjson }
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    HttpRequest,
    ItemResult,
    ItemStatus,
    Payload,
)
from streamctl.destinations.webhook import GENERIC_CUSTOM


def ndjson_lines(payloads: Sequence[Payload]) -> bytes:
    """One compact JSON object per line, each line ending in a newline."""
    return b"".join(orjson.dumps(p) + b"\n" for p in payloads)


class FileDestination(Destination):
    embeds_payloads = True  # the body is the payloads serialised as they are
    catalog = CatalogEntry(
        type="file",
        description="Append each payload as one JSON line to a local NDJSON file.",
        docs="docs/configuration.md#generic-destinations",
        config=(
            ConfigField(
                "path",
                "string",
                required=True,
                project_path=True,
                description="NDJSON file, relative to the project root.",
            ),
        ),
        event_types=(GENERIC_CUSTOM,),
        batch_size=100,
        max_batch_size=10_000,
    )

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.path = Path(str(self.config["path"]))
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()  # several workers may append at once

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        """What `preview` shows: the lines that would be appended."""
        return HttpRequest("APPEND", self.path.as_uri(), content=ndjson_lines(payloads))

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        data = ndjson_lines(payloads)
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            # A full disk or a missing permission may be fixed: retry rather than archive.
            return BatchResult.same(
                len(payloads),
                ItemResult(ItemStatus.RETRY, error=f"cannot write {self.path}: {exc}"),
            )
        return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED))

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(data)
            self._file.flush()

    async def aclose(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
