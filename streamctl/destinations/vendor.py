"""Wire-format pieces several vendor destinations share.

    to_epoch_millis("2026-11-26T12:00:00Z")   # 1795694400000
    to_iso8601(1795694400000)                  # "2026-11-26T12:00:00.000Z"
    base_url(config, "https://api2.amplitude.com")
    json_object(response)                      # the response body as a dict, or None
    whole_batch_outcome(response, n, "braze: HTTP 503 ...")   # RETRY or FAILED for all n
    named_failures(response, n, {2: ["events[2]: bad time"]}, "braze")  # only #2 fails

Event timestamps arrive as ISO 8601 strings (Segment spec), but vendors want
milliseconds since the epoch (Amplitude, Mixpanel) or ISO 8601 again (Braze);
numbers are accepted too, read as seconds when small enough to be seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import orjson

from streamctl.core.timestamps import TimestampError as TimestampError
from streamctl.core.timestamps import parse_timestamp as parse_timestamp
from streamctl.destinations.base import (
    BatchResult,
    ItemResult,
    ItemStatus,
    excerpt,
    is_retryable_status,
    parse_retry_after,
)


def to_epoch_millis(value: Any) -> int:
    """Milliseconds since the epoch, as Amplitude's `time` and Mixpanel's `time` want."""
    return round(parse_timestamp(value).timestamp() * 1000)


def to_iso8601(value: Any) -> str:
    """ISO 8601 in UTC with milliseconds, as Braze's `time` wants."""
    return parse_timestamp(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def converted_or_kept(value: Any, convert: Callable[[Any], Any]) -> Any:
    """`convert(value)`, or the value as it is when it is no timestamp: the destination's
    `check_payload` then refuses it with a message naming the field (a mapping_error)."""
    try:
        return convert(value)
    except TimestampError:
        return value


def seconds_until_reset(value: str | None) -> float | None:
    """Seconds until an `X-RateLimit-Reset` header's time (UTC epoch seconds): Braze, Intercom."""
    try:
        reset = float(value) if value else None
    except ValueError:
        return None
    return None if reset is None else max(0.0, reset - time.time())


def base_url(config: Mapping[str, Any], default: str) -> str:
    """`base_url` from the config (proxies, regions, tests) or the vendor's host, without a trailing slash."""
    return str(config.get("base_url") or default).rstrip("/")


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is empty, not JSON or not an object."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def int_list(value: Any) -> list[int]:
    """The integers of a JSON array (indexes in vendor error bodies); anything else is empty."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, int) and not isinstance(item, bool)]


def retry_after_or(response: httpx.Response, *fallbacks: float | None) -> float | None:
    """Seconds to wait from the response's Retry-After (`0` included: retry at once), else
    the first of `fallbacks` that is not None."""
    wait = parse_retry_after(response.headers.get("retry-after"))
    for fallback in fallbacks:
        if wait is not None:
            break
        wait = fallback
    return wait


def whole_batch_outcome(
    response: httpx.Response,
    n: int,
    error: str,
    *,
    split: bool = False,
    retry_after: float | None = None,
) -> BatchResult:
    """The same outcome for all `n` payloads, from the status code alone.

    408, 423, 429 and 5xx: RETRY after `retry_after`, else the response's Retry-After.
    Anything else: FAILED; with `split` the engine bisects the batch, for refusals that
    may come from a single item (not for bad credentials, which no half can fix).
    """
    code = response.status_code
    if is_retryable_status(code):
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return BatchResult.same(
            n, ItemResult(ItemStatus.RETRY, code, error, retry_after, excerpt(response))
        )
    failed = ItemResult(ItemStatus.FAILED, code, error, response=excerpt(response))
    return BatchResult.same(n, failed, split=split)


def named_failures(
    response: httpx.Response, n: int, reasons: Mapping[int, Sequence[str]], vendor: str
) -> BatchResult:
    """A partial success: the payloads at `reasons`' indexes FAILED with those reasons,
    every other one DELIVERED (the vendor ingested it)."""
    code = response.status_code
    return BatchResult(
        tuple(
            ItemResult(
                ItemStatus.FAILED,
                code,
                f"{vendor}: " + "; ".join(reasons[i]),
                response=excerpt(response),
            )
            if i in reasons
            else ItemResult(ItemStatus.DELIVERED, code)
            for i in range(n)
        )
    )
