"""The parsed project: immutable data, compiled once at load time.

Raw YAML dicts stop in `streamctl.config.loader`; everything after it receives these
frozen objects, whose filters, field paths and templates are ready to run.

    Project
    ├── sources:      {name: SourceConfig}
    ├── destinations: {name: DestinationConfig}
    ├── contracts:    {name: Contract}            (streamctl.contracts)
    ├── syncs:        (SyncConfig, ...)
    │     ├── function:    FunctionRef | None
    │     ├── event_types: (EventTypeRule, ...)  filter (streamctl.filters) + mapping (streamctl.mappings)
    │     └── delivery:    DeliveryPolicy
    └── alerts:       AlertsConfig
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from streamctl.contracts import Contract
    from streamctl.filters import Predicate
    from streamctl.mappings import CompiledMapping

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Location:
    """Where a definition came from, for messages: `syncs/a.yaml:12:5`."""

    path: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: Literal["http", "webhook", "stream"]
    write_keys: tuple[str, ...] = ()
    contract: str | None = None
    secret: str | None = None  # webhook HMAC-SHA256 secret
    signature_header: str = "X-Signature"
    event_name_field: str | None = None  # webhook: path into the body giving `event`
    location: Location = Location("streamctl.yaml")


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str  # a key of streamctl.destinations.registry.CATALOG
    config: Mapping[str, Any] = field(
        default_factory=lambda: EMPTY
    )  # interpolated values, secrets included: never print
    location: Location = Location("streamctl.yaml")


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 1.0  # seconds
    max: float = 300.0


@dataclass(frozen=True)
class DeliveryPolicy:
    """`delivery:` of a sync. `None` means "the destination's default"."""

    batch_size: int | None = None
    concurrency: int = 4
    rate_limit: float | None = None  # events per second
    max_attempts: int = 10
    max_age: float = 4 * 3600.0  # seconds
    backoff: BackoffPolicy = BackoffPolicy()
    ordering: Literal["none", "per_user"] = "none"
    timeout: float = 30.0  # seconds per request


@dataclass(frozen=True)
class FunctionRef:
    path: Path  # absolute path of functions/NAME.py
    settings: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    timeout: float = 5.0  # seconds per batch


@dataclass(frozen=True)
class EventTypeRule:
    """One entry of a sync's `event_types`: a destination event type, when it applies, how it is shaped."""

    type: str
    filter: Predicate | None  # None matches every event
    mapping: CompiledMapping
    location: Location = Location("")


@dataclass(frozen=True)
class SyncConfig:
    name: str
    source: str
    destination: str
    event_types: tuple[EventTypeRule, ...]
    match: Literal["first", "all"] = "first"
    function: FunctionRef | None = None
    delivery: DeliveryPolicy = DeliveryPolicy()
    location: Location = Location("")


@dataclass(frozen=True)
class AlertChannel:
    name: str
    type: Literal["slack", "webhook", "pagerduty", "email"]
    config: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True)
class AlertRule:
    name: str
    sync: str  # a sync name or "*"
    when: Literal["error_rate", "failures", "archived", "latency_p95", "no_events"]
    above: float | None = None
    below: float | None = None
    window: float = 300.0  # seconds
    severity: Literal["critical", "warning"] = "warning"
    notify: tuple[str, ...] = ()
    location: Location = Location("streamctl.yaml")


@dataclass(frozen=True)
class AlertsConfig:
    channels: Mapping[str, AlertChannel] = field(default_factory=lambda: EMPTY)
    rules: tuple[AlertRule, ...] = ()
    interval: float = 30.0  # seconds between evaluations inside `streamctl run`


@dataclass(frozen=True)
class Project:
    root: Path
    store_path: Path
    listen: ListenConfig = ListenConfig()
    sources: Mapping[str, SourceConfig] = field(default_factory=lambda: EMPTY)
    destinations: Mapping[str, DestinationConfig] = field(default_factory=lambda: EMPTY)
    contracts: Mapping[str, Contract] = field(default_factory=lambda: EMPTY)
    syncs: tuple[SyncConfig, ...] = ()
    alerts: AlertsConfig = AlertsConfig()
    secrets: frozenset[str] = field(default_factory=frozenset)  # values to redact everywhere
    retention_days: float = 30.0
    console_token: str | None = None  # `console.token`: a secret, never print

    def sync(self, name: str) -> SyncConfig:
        for sync in self.syncs:
            if sync.name == name:
                return sync
        msg = f"unknown sync {name!r}; known: {', '.join(s.name for s in self.syncs) or 'none'}"
        raise KeyError(msg)

    def syncs_for_source(self, source: str) -> tuple[SyncConfig, ...]:
        return tuple(s for s in self.syncs if s.source == source)
