"""The parsed project: immutable data, compiled once at load time.

Raw YAML dicts stop in `streamctl.config.loader`, which compiles the stages; everything after it receives these
frozen objects, whose filters, field paths and templates are ready to run.

    Project
    ├── sources:      {name: SourceConfig}
    ├── destinations: {name: DestinationConfig}
    ├── contracts:    {name: Contract}            (compiled by streamctl.contracts)
    ├── syncs:        (SyncConfig, ...)
    │     ├── function:    FunctionRef | None
    │     ├── event_types: (EventTypeRule, ...)  filter + mapping (compiled by .filters, .mappings)
    │     └── delivery:    DeliveryPolicy
    └── alerts:       AlertsConfig
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from streamctl.core.events import Event, MappedEvent
from streamctl.core.outcomes import ContractResult

# The compiled stages the model holds, as the pipeline sees them. The stages
# (streamctl.contracts, .filters, .mappings) implement these; the model, below them,
# names only what it needs, so no layer imports upwards.
Predicate = Callable[[Event], bool]


class Contract(Protocol):
    """A source's compiled data contract (`streamctl.contracts.compile_contract`)."""

    name: str

    def check(self, event: Event) -> ContractResult: ...


class CompiledMapping(Protocol):
    """An event type's compiled mapping (`streamctl.mappings.compile_mapping`)."""

    def apply(self, event: Event) -> MappedEvent: ...


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


DEFAULT_SESSION_TIMEOUT = 10.0  # seconds: aiokafka's default session.timeout.ms


@dataclass(frozen=True)
class KafkaSourceConfig:
    """`type: kafka` of a source: the topics it reads and how (docs/sources/kafka.md)."""

    brokers: tuple[str, ...]
    group: str  # the consumer group; default streamctl.PROJECT.SOURCE
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None  # a regular expression, instead of `topics`
    start_offset: Literal["earliest", "latest"] = "earliest"  # for a group with no offsets yet
    format: Literal["segment", "json"] = "segment"
    max_poll_records: int = 500
    session_timeout: float = DEFAULT_SESSION_TIMEOUT  # seconds a silent member stays in the group
    # The SASL/TLS settings as written (streamctl.core.kafka.SECURITY_KEYS): never print.
    security: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: Literal["http", "webhook", "stream", "kafka"]
    write_keys: tuple[str, ...] = ()
    contract: str | None = None
    secret: str | None = None  # webhook HMAC-SHA256 secret
    signature_header: str = "X-Signature"
    event_name_field: str | None = None  # webhook, kafka json: path into the body giving `event`
    location: Location = Location("streamctl.yaml")
    kafka: KafkaSourceConfig | None = None  # `type: kafka` only


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
    # Retries are bounded by time, like Segment's 4 hours and RudderStack's 3: a count
    # of 10 with this backoff gave up after about ten minutes, and a destination down for
    # two minutes under load lost events to the archive. None: no count limit.
    max_attempts: int | None = None
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
    type: str  # a key of streamctl.channels.CHANNELS
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
    # `store: postgresql://...`: the shared PostgreSQL store (store_path is then unused).
    store_url: str | None = None
    # `bus:`: the Kafka bus settings as written (url, timeout, security: streamctl.bus.kafka).
    bus: Mapping[str, Any] | None = None

    @property
    def store_location(self) -> str:
        """The store for messages: the file, or the URL with its password masked."""
        if self.store_url is None:
            return str(self.store_path)
        parts = urlsplit(self.store_url)
        if parts.password is None:
            return self.store_url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

    @property
    def store_file(self) -> Path:
        """`store:` of streamctl.yaml, relative to the project root unless absolute."""
        path = Path(self.store_path)
        return path if path.is_absolute() else Path(self.root) / path

    def sync(self, name: str) -> SyncConfig:
        for sync in self.syncs:
            if sync.name == name:
                return sync
        msg = f"unknown sync {name!r}; known: {', '.join(s.name for s in self.syncs) or 'none'}"
        raise KeyError(msg)

    def syncs_for_source(self, source: str) -> tuple[SyncConfig, ...]:
        return tuple(s for s in self.syncs if s.source == source)
