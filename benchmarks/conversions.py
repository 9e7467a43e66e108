"""What hashing identifiers costs the ad-platform destinations, per event.

    python benchmarks/conversions.py [--events 20000] [--rounds 7]

Each round builds the `meta` payload of the same events three ways, alternating within
the round so the machine's drift hits all alike:
- `plain`: email, phone, first name, city, country and userId arrive in plain text
  and are normalised and SHA-256-hashed (6 hashes an event);
- `hashed`: the same identifiers arrive already hashed (64 hex), so they pass through;
- `amplitude`: Amplitude's build_payload of the same events, a destination without
  hashing, for scale.
It prints events/s per way (medians over rounds) and the plain/hashed ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from streamctl.destinations.amplitude import AmplitudeDestination
from streamctl.destinations.base import MappedEvent
from streamctl.destinations.meta import MetaDestination


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def events(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": f"m-{i}",
            "userId": f"user-{i}",
            "timestamp": now,
            "context": {
                "ip": "203.0.113.7",
                "userAgent": "Mozilla/5.0",
                "page": {"url": "https://x.example/"},
            },
            "properties": {"total": 10.5, "currency": "USD"},
        }
        for i in range(n)
    ]


def plain_user(i: int) -> dict[str, Any]:
    return {"em": f" User{i}@Example.com ", "ph": f"+1 (650) 555-{i % 10000:04d}", "fn": "Mary",
            "ct": "Menlo Park", "country": "US", "external_id": f"user-{i}"}  # fmt: skip


def timed(build: Callable[[int, dict[str, Any]], Any], batch: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for i, event in enumerate(batch):
        build(i, event)
    return len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    batch = events(args.events)
    plain = [plain_user(i) for i in range(args.events)]
    hashed = [
        {key: sha(str(value).strip().lower()) for key, value in user.items()} for user in plain
    ]
    meta = MetaDestination("meta", {"pixel_id": "1", "access_token": "t"})
    amplitude = AmplitudeDestination("amp", {"api_key": "k"})
    required = {"value": 10.5, "currency": "USD"}
    ways: dict[str, Callable[[int, dict[str, Any]], Any]] = {
        "plain": lambda i, e: meta.build_payload(
            "purchase", MappedEvent(required, user=plain[i]), e
        ),
        "hashed": lambda i, e: meta.build_payload(
            "purchase", MappedEvent(required, user=hashed[i]), e
        ),
        "amplitude": lambda i, e: amplitude.build_payload(
            "custom", MappedEvent({"event_type": "Order Completed"}, user=plain[i]), e
        ),
    }
    figures: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, build in ways.items():
            figures[name].append(timed(build, batch))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"{name:>9}: {value:>10,.0f} events/s (median of {args.rounds} rounds)")
    ratios = [p / h for p, h in zip(figures["plain"], figures["hashed"], strict=True)]
    print(
        f"plain/hashed: median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
