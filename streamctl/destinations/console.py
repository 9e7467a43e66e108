"""`console`: payloads as NDJSON on stdout (SPEC §6), for trying syncs out.

No config. In streamctl.yaml:

    destinations:
      stdout:
        type: console
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import httpx

from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    Destination,
    HttpRequest,
    ItemResult,
    ItemStatus,
    Payload,
)
from streamctl.destinations.file import ndjson_lines
from streamctl.destinations.webhook import GENERIC_CUSTOM

_stdout_lock = threading.Lock()  # whole lines, even with several console destinations


class ConsoleDestination(Destination):
    embeds_payloads = True  # the body is the payloads serialised as they are
    catalog = CatalogEntry(
        type="console",
        description="Print each payload as one JSON line on stdout.",
        docs="docs/configuration.md#generic-destinations",
        config=(),
        event_types=(GENERIC_CUSTOM,),
        batch_size=100,
        max_batch_size=10_000,
    )

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        return HttpRequest("PRINT", "stdout", content=ndjson_lines(payloads))

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        text = ndjson_lines(payloads).decode()
        with _stdout_lock:
            # sys.stdout is looked up per call, so redirections (tests, CliRunner) apply.
            sys.stdout.write(text)
            sys.stdout.flush()
        return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED))
