"""One batch sent as several requests, with per-payload outcomes merged back in order.

Some APIs cannot take an arbitrary batch in one request: GA4 wants one `client_id` per
request, Segment's batch endpoint takes at most 500 KB. Those destinations override
`send` to cut the batch into parts (lists of payload indexes) and call `send_parts`:

    parts = chunk_by_bytes(payloads, max_bytes=500 * 1024, envelope_bytes=64)
    return await send_parts(self, client, event_type, payloads, parts, timeout)

Each part goes through the base `Destination.send` (build_request -> httpx -> classify).
When one part of several is refused as a whole (`split`), it is bisected here, so good
events of that part still go through and the other parts' outcomes stand; a single
part is returned as is and the delivery engine bisects it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import orjson

from streamctl.destinations.base import (
    BatchResult,
    Destination,
    ItemResult,
    ItemStatus,
    Payload,
    excerpt,
    is_retryable_status,
    parse_retry_after,
)

Part = Sequence[int]


def chunk_by_bytes(
    payloads: Sequence[Payload],
    *,
    max_bytes: int,
    envelope_bytes: int = 0,
    max_items: int | None = None,
) -> list[list[int]]:
    """Consecutive index runs whose JSON array (plus the request envelope) fits in `max_bytes`.

    A payload larger than the limit on its own gets a part of its own: the vendor refuses
    it and only it (destinations check per-event limits in `check_payload` first).
    """
    parts: list[list[int]] = []
    current: list[int] = []
    size = envelope_bytes + 2  # "[" and "]"
    for index, payload in enumerate(payloads):
        item = len(orjson.dumps(payload)) + 1  # the separating comma
        full = max_items is not None and len(current) >= max_items
        if current and (full or size + item > max_bytes):
            parts.append(current)
            current, size = [], envelope_bytes + 2
        current.append(index)
        size += item
    if current:
        parts.append(current)
    return parts


async def send_parts(
    destination: Destination,
    client: httpx.AsyncClient,
    event_type: str,
    payloads: Sequence[Payload],
    parts: Sequence[Part],
    timeout: float,
) -> BatchResult:
    """Send each part as one request (concurrently) and merge the outcomes in payload order."""
    results = await asyncio.gather(
        *(_send_one(destination, client, event_type, payloads, part, timeout) for part in parts)
    )
    if len(parts) == 1:
        return results[0]
    items: list[ItemResult | None] = [None] * len(payloads)
    for part, result in zip(parts, results, strict=True):
        if result.split and len(part) > 1:
            result = await _bisect(destination, client, event_type, payloads, part, timeout)
        for index, item in zip(part, result.items, strict=True):
            items[index] = item
    return BatchResult(tuple(item for item in items if item is not None))


async def _send_one(
    destination: Destination,
    client: httpx.AsyncClient,
    event_type: str,
    payloads: Sequence[Payload],
    part: Part,
    timeout: float,
) -> BatchResult:
    return await Destination.send(
        destination, client, event_type, [payloads[i] for i in part], timeout
    )


async def _bisect(
    destination: Destination,
    client: httpx.AsyncClient,
    event_type: str,
    payloads: Sequence[Payload],
    part: Part,
    timeout: float,
) -> BatchResult:
    sub = [payloads[i] for i in part]
    middle = len(part) // 2
    halves = [range(middle), range(middle, len(part))]
    return await send_parts(destination, client, event_type, sub, halves, timeout)


SPLIT_STATUSES = frozenset({400, 413})


def whole_request_result(
    response: httpx.Response,
    n: int,
    *,
    detail: str | None = None,
    split_on: frozenset[int] = SPLIT_STATUSES,
) -> BatchResult:
    """The same outcome for every payload of a refused or failed request.

    Retryable statuses (408, 423, 429, 5xx) retry with Retry-After; other 4xx fail, and
    only the statuses in `split_on` (the request's content was refused: 400, 413) ask
    the engine to bisect: bisecting a 401 or a 404 would only repeat it. `detail` is the
    vendor's own error (code, message) for the record.
    """
    code = response.status_code
    retry = is_retryable_status(code)
    item = ItemResult(
        ItemStatus.RETRY if retry else ItemStatus.FAILED,
        code,
        error=f"HTTP {code}: {detail}" if detail else f"HTTP {code}",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        response=excerpt(response),
    )
    return BatchResult.same(n, item, split=not retry and code in split_on)
