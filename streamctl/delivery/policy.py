"""When to retry, how long to wait, and how fast to send (SPEC §5).

policy = RetryPolicy.of(sync.delivery)
policy.next_attempt_at(attempts=3, now=now, retry_after=2.0)   # never before Retry-After
policy.gives_up(attempts=10, created_at=t0, next_at=t)          # max_attempts / max_age

bucket = AdaptiveRate(rate=100.0, burst=100)                    # events per second
await bucket.take(50)                                           # waits for tokens
bucket.throttled()                                              # a 429: halve the rate
bucket.succeeded()                                              # recover step by step
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from streamctl.core.model import DeliveryPolicy
from streamctl.core.units import format_duration

_MAX_DOUBLINGS = 64  # past this every ceiling is `max`; 2.0**1024 would overflow


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS
    Architecture Blog, 2015; tenacity's `wait_random_exponential` is the same
    formula), floored at `initial`, capped at `max`; `max_age` ends it, and
    `max_attempts` when set (by default retries are bounded by time only: 4 hours, with
    a wait of at most 5 min). Written out here: tenacity computes it only from a `RetryCallState`, which
    exists inside its own retry loop."""

    initial: float
    max: float
    max_attempts: int | None
    max_age: float

    @classmethod
    def of(cls, delivery: DeliveryPolicy) -> RetryPolicy:
        return cls(
            delivery.backoff.initial,
            delivery.backoff.max,
            delivery.max_attempts,
            delivery.max_age,
        )

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1-based): uniformly
        random up to initial * 2^(attempts - 1), that ceiling capped at `max`."""
        doublings = min(max(1, attempts) - 1, _MAX_DOUBLINGS)
        ceiling = min(self.max, self.initial * 2.0**doublings)
        return max(self.initial, random.uniform(0.0, ceiling))

    def next_attempt_at(self, attempts: int, now: float, retry_after: float | None = None) -> float:
        """The earliest moment for the next attempt: the backoff, or later if the
        destination said so with Retry-After (never earlier)."""
        wait = self.backoff(attempts)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return now + wait

    def gives_up(self, attempts: int, created_at: float, next_at: float) -> str | None:
        """Why the delivery is archived instead of retried at `next_at`, or None."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts (max_attempts {self.max_attempts})"
        if next_at - created_at > self.max_age:
            return f"gave up: the next attempt would pass max_age ({format_duration(self.max_age)})"
        return None


class AdaptiveRate:
    """A token bucket in events per second that halves on 429 and recovers by 10%
    per successful request up to the configured rate. `rate=None`: unlimited until
    the first 429, then starting from `fallback` events per second."""

    def __init__(self, rate: float | None, burst: int, fallback: float = 100.0) -> None:
        self.ceiling = rate
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.fallback = fallback
        self.tokens = self.burst
        self.updated = time.monotonic()

    async def take(self, count: int) -> None:
        while self.rate is not None:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            # A batch larger than the bucket still goes once the bucket is full.
            need = min(float(count), self.burst)
            if self.tokens >= need:
                self.tokens -= count
                return
            await asyncio.sleep((need - self.tokens) / self.rate)

    def throttled(self) -> None:
        current = self.rate if self.rate is not None else self.fallback
        self.rate = max(current / 2, 0.5)
        self.tokens = min(self.tokens, 0.0)

    def succeeded(self) -> None:
        if self.rate is None:
            return
        ceiling = self.ceiling
        grown = self.rate * 1.1
        if ceiling is None:
            # Unlimited by configuration: once well above the fallback, stop limiting.
            self.rate = None if grown > self.fallback * 64 else grown
        else:
            self.rate = min(ceiling, grown)


class AdaptiveConcurrency:
    """How many requests a sync keeps in flight: `limit`, halved on 429, +1 per
    `recover_after` successes back up to `limit`."""

    def __init__(self, limit: int, recover_after: int = 10) -> None:
        self.limit = max(1, limit)
        self.current = self.limit
        self.in_flight = 0
        self.recover_after = recover_after
        self._successes = 0

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.current

    def throttled(self) -> None:
        self.current = max(1, self.current // 2)
        self._successes = 0

    def succeeded(self) -> None:
        if self.current >= self.limit:
            return
        self._successes += 1
        if self._successes >= self.recover_after:
            self.current += 1
            self._successes = 0
