"""Delivery (SPEC §5): per-sync lanes with batching, rate limits, retries and archiving.

The entry point is `Runtime` (streamctl.delivery.runtime), shared by `streamctl run`
and `streamctl replay`; `DeliveryEngine` and `SyncLane` are its parts.
"""

from __future__ import annotations

from streamctl.delivery.engine import DeliveryEngine
from streamctl.delivery.policy import AdaptiveConcurrency, AdaptiveRate, RetryPolicy
from streamctl.delivery.runtime import Runtime, SubmitSummary, select_syncs

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveRate",
    "DeliveryEngine",
    "RetryPolicy",
    "Runtime",
    "SubmitSummary",
    "select_syncs",
]
