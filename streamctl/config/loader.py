"""Loading a project folder into a compiled, immutable `Project`.

    project = load_project(Path("."))            # raises ConfigError with every problem
    project, problems = check_project(Path("."))  # for `streamctl validate`: errors and warnings

Reading order: every YAML file is parsed with its node positions and `${ENV}`
interpolated (`documents`), checked against its JSON Schema (`schema`), then built
into the dataclasses of `model`, with the semantic checks a schema cannot express:
references between files, the destination catalog, function files, and the
compilation of contracts, filters and mappings. Nothing stops at the first problem.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streamctl.channels import CHANNELS
from streamctl.config.documents import Document, NodePath, parse_document
from streamctl.config.schema import (
    TYPE_WORDS,
    SchemaName,
    check_structure,
    is_clean,
    type_word,
)
from streamctl.config.secrets import (
    MIN_SECRET_LENGTH,
    redact,
    remember_secrets,
    secret_strings,
)
from streamctl.config.syncs import SyncContext, build_sync, matches_json_type, sync_name
from streamctl.contracts import Contract, compile_contract
from streamctl.core.errors import ConfigError, Problem, SpecError, suggest
from streamctl.core.kafka import SECRET_SECURITY_KEYS, SECURITY_KEYS
from streamctl.core.model import (
    DEFAULT_SESSION_TIMEOUT,
    AlertChannel,
    AlertRule,
    AlertsConfig,
    DestinationConfig,
    KafkaSourceConfig,
    ListenConfig,
    Location,
    Project,
    SourceConfig,
    SyncConfig,
)
from streamctl.core.units import parse_duration
from streamctl.destinations.base import CatalogEntry, ConfigField
from streamctl.destinations.registry import CATALOG

PROJECT_FILE = "streamctl.yaml"
STORE_URL_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_STORE = ".streamctl/state.db"
YAML_SUFFIXES = (".yaml", ".yml")

WEBHOOK_ONLY_KEYS = ("secret", "signature_header")
KAFKA_ONLY_KEYS = (
    "brokers", "topics", "topic_pattern", "group", "start_offset", "format", "max_poll_records",
    "session_timeout", *SECURITY_KEYS,
)  # fmt: skip
ARRAY_BODY = "array_body"  # webhook: send a JSON array even for one payload


def load_project(
    root: Path | str, *, env: Mapping[str, str] | None = None, strict: bool = False
) -> Project:
    """The compiled project at `root`; raises ConfigError carrying every problem found.

    With `strict`, warnings fail the load too. `env` defaults to `os.environ`."""
    project, problems = check_project(root, env)
    failing = [p for p in problems if p.severity == "error" or strict]
    if project is None or failing:
        raise ConfigError(failing or problems)
    return project


def check_project(
    root: Path | str, env: Mapping[str, str] | None = None
) -> tuple[Project | None, list[Problem]]:
    """Every problem (errors and warnings) of the project at `root`, sorted by file and line,
    and the project itself when there is no error. Messages are already redacted."""
    loader = _ProjectLoader(Path(root).resolve(), os.environ if env is None else env)
    project = loader.load()
    remember_secrets(loader.secrets)
    return project, loader.sorted_problems()


@dataclass
class _ProjectLoader:
    root: Path
    env: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    # ("source" | "destination", name) that some sync file names, valid or not
    sync_references: set[tuple[str, str]] = field(default_factory=set)

    # -- reading ---------------------------------------------------------------------

    def read(self, relative: str, schema: SchemaName) -> tuple[Document, set[NodePath]]:
        """The parsed file and the node paths with structural problems (`{()}`: all of it)."""
        try:
            text = (self.root / relative).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = Problem(relative, 1, 1, f"cannot read file: {exc}")
            self.problems.append(problem)
            return Document(relative, problems=[problem]), {()}
        doc = parse_document(text, relative, self.env)
        self.problems.extend(doc.problems)
        # Environment values, with their credential parts when they are URLs.
        self.secrets.update(secret_strings(sorted(doc.secrets)))
        if doc.problems and doc.data is None:
            return doc, {()}
        structural, broken = check_structure(doc, schema)
        self.problems.extend(structural)
        return doc, broken

    def files(self, folder: str) -> list[str]:
        directory = self.root / folder
        if not directory.is_dir():
            return []
        return sorted(
            f"{folder}/{p.name}"
            for p in directory.iterdir()
            if p.suffix in YAML_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )

    def sorted_problems(self) -> list[Problem]:
        unique = {
            Problem(p.path, p.line, p.column, redact(p.message, self.secrets), p.severity)
            for p in self.problems
        }
        return sorted(unique)

    # -- the whole project -------------------------------------------------------------

    def load(self) -> Project | None:
        if not (self.root / PROJECT_FILE).is_file():
            message = f"not a streamctl project: {PROJECT_FILE} is missing (create one with `streamctl init`)"
            self.problems.append(Problem(PROJECT_FILE, 1, 1, message))
            return None
        main, broken = self.read(PROJECT_FILE, "streamctl")
        data = main.data if isinstance(main.data, dict) else {}
        self.note_secrets(data)
        contracts, contract_files = self.load_contracts()
        sources = self.sources(main, broken, data.get("sources"), contract_files.keys())
        destinations = self.destinations(main, broken, data.get("destinations"))
        context = SyncContext(
            root=self.root,
            sources=self.declared(data, broken, "sources"),
            destinations=self.declared(data, broken, "destinations"),
            catalog_of={
                name: CATALOG[d.type].catalog
                for name, d in destinations.items()
                if d.type in CATALOG
            },
        )
        syncs, sync_names = self.load_syncs(context)
        destinations = self.settle_array_bodies(destinations, syncs)
        alerts = self.alerts(main, broken, data.get("alerts"), sync_names)
        self.warn_unused(main, data, contract_files)
        if any(p.severity == "error" for p in self.problems) or alerts is None:
            return None
        listen = data.get("listen", {})
        store_url = _store_url(data.get("store"))
        return Project(
            root=self.root,
            store_path=Path(DEFAULT_STORE if store_url else data.get("store", DEFAULT_STORE)),
            store_url=store_url,
            listen=ListenConfig(
                host=listen.get("host", ListenConfig.host),
                port=listen.get("port", ListenConfig.port),
            ),
            sources=sources,
            destinations=destinations,
            contracts=contracts,
            syncs=tuple(syncs),
            alerts=alerts,
            secrets=frozenset(s for s in self.secrets if len(s) >= MIN_SECRET_LENGTH),
            retention_days=float(data.get("retention_days", 30.0)),
            bus=data.get("bus"),
            console_token=(data.get("console") or {}).get("token") or None,
        )

    def note_secrets(self, data: dict[str, Any]) -> None:
        """Every credential streamctl.yaml holds, noted before anything is checked: a
        problem in one entry (a typo'd key) must not leave its secrets, or those of the
        entries after it, out of the redaction of every message."""
        store_url = _store_url(data.get("store"))
        if store_url is not None:
            self.secrets.update(secret_strings([urlsplit(store_url).password]))
        bus = data.get("bus")
        if isinstance(bus, dict):
            self.secrets.update(secret_strings(bus.get("sasl_plain_password")))
        for spec in _entries(data.get("sources")):
            self.secrets.update(secret_strings(spec.get("secret")))
            self.secrets.update(secret_strings(spec.get("write_keys")))  # SPEC §4: never printed
            self.secrets.update(secret_strings([spec.get(k) for k in SECRET_SECURITY_KEYS]))
        console = data.get("console")
        if isinstance(console, dict):
            self.secrets.update(secret_strings(console.get("token")))
        for spec in _entries(data.get("destinations")):
            kind, config = spec.get("type"), spec.get("config")
            if isinstance(kind, str) and kind in CATALOG and isinstance(config, dict):
                secret = CATALOG[kind].catalog.secret_fields
                self.secrets.update(secret_strings([v for k, v in config.items() if k in secret]))
        alerts = data.get("alerts")
        channels = alerts.get("channels") if isinstance(alerts, dict) else None
        for spec in _entries(channels):
            kind = spec.get("type")
            if isinstance(kind, str) and kind in CHANNELS:
                secret = CHANNELS[kind].secret
                self.secrets.update(secret_strings([v for k, v in spec.items() if k in secret]))

    @staticmethod
    def declared(data: dict[str, Any], broken: set[NodePath], key: str) -> list[str] | None:
        """The names a section declares; None when the section itself is unreadable,
        so syncs are not told their references are unknown on top of that problem."""
        if () in broken or (key,) in broken:
            return None
        return _names(data.get(key))

    # -- contracts/*.yaml ----------------------------------------------------------------

    def load_contracts(self) -> tuple[dict[str, Contract], dict[str, Document]]:
        contracts: dict[str, Contract] = {}
        declared: dict[str, Document] = {}
        for relative in self.files("contracts"):
            doc, broken = self.read(relative, "contract")
            spec = doc.data if isinstance(doc.data, dict) else {}
            name: str = spec["name"] if isinstance(spec.get("name"), str) else Path(relative).stem
            if name in declared:
                where = ("name",) if "name" in spec else ()
                message = f"duplicate contract name {name!r} (also {declared[name].path})"
                self.problems.append(doc.problem(where, message))
                continue
            declared[name] = doc
            if broken:
                continue
            try:
                contracts[name] = compile_contract(spec, name)
            except SpecError as exc:
                self.problems.append(doc.problem(exc.path, str(exc)))
        return contracts, declared

    # -- streamctl.yaml: sources -------------------------------------------------------

    def sources(
        self, doc: Document, broken: set[NodePath], specs: Any, contracts: Collection[str]
    ) -> dict[str, SourceConfig]:
        sources: dict[str, SourceConfig] = {}
        if not isinstance(specs, dict):
            return sources
        key_owner: dict[str, str] = {}
        for name, spec in specs.items():
            path: NodePath = ("sources", name)
            if not is_clean(path, broken):
                continue
            source = self.source(doc, path, name, spec, contracts)
            for i, key in enumerate(source.write_keys):
                if key in key_owner:
                    message = f"source {name!r} reuses a write key of source {key_owner[key]!r}"
                    self.problems.append(doc.problem((*path, "write_keys", i), message))
                key_owner.setdefault(key, name)
            sources[name] = source
        return sources

    def source(
        self,
        doc: Document,
        path: NodePath,
        name: str,
        spec: dict[str, Any],
        contracts: Collection[str],
    ) -> SourceConfig:
        kind = spec["type"]
        contract = spec.get("contract")
        if contract is not None and contract not in contracts:
            message = (
                f"unknown contract {contract!r}{suggest(contract, contracts)}; "
                f"no contracts/{contract}.yaml declares it"
            )
            self.problems.append(doc.problem((*path, "contract"), message))
        self.only_for(doc, path, spec, kind, "webhook", WEBHOOK_ONLY_KEYS)
        self.only_for(doc, path, spec, kind, "kafka", KAFKA_ONLY_KEYS)
        if "event_name" in spec and kind != "webhook" and spec.get("format") != "json":
            message = f"'event_name' applies to webhook sources and kafka sources of format json (this one is {kind})"
            self.problems.append(doc.problem((*path, "event_name"), message, key=True))
        if kind in ("webhook", "kafka") and "write_keys" in spec:
            receives = "POST /webhooks/" + name if kind == "webhook" else "their topics"
            message = f"{kind} sources take no write_keys: they receive {receives}"
            self.problems.append(doc.problem((*path, "write_keys"), message, key=True))
        if kind == "http" and not spec.get("write_keys"):
            message = f"http source {name!r} needs at least one write key (write_keys: [...])"
            self.problems.append(doc.problem(path, message, key=True))
        secret = spec.get("secret") or None
        line, column = doc.position(path, key=True)
        return SourceConfig(
            name=name,
            type=kind,
            write_keys=tuple(spec.get("write_keys", ())),
            contract=contract,
            secret=secret,
            signature_header=spec.get("signature_header", "X-Signature"),
            event_name_field=spec.get("event_name", {}).get("field"),
            location=Location(doc.path, line, column),
            kafka=self.kafka_source(doc, path, name, spec) if kind == "kafka" else None,
        )

    def only_for(
        self, doc: Document, path: NodePath, spec: dict[str, Any], kind: str, owner: str,
        keys: Collection[str],
    ) -> None:  # fmt: skip
        if kind == owner:
            return
        for key in keys:
            if key in spec:
                message = f"{key!r} applies to {owner} sources only (this one is {kind})"
                self.problems.append(doc.problem((*path, key), message, key=True))

    def kafka_source(
        self, doc: Document, path: NodePath, name: str, spec: dict[str, Any]
    ) -> KafkaSourceConfig:
        pattern = spec.get("topic_pattern")
        if pattern is not None:
            if "topics" in spec:
                message = "give `topics` or `topic_pattern`, not both"
                self.problems.append(doc.problem((*path, "topic_pattern"), message, key=True))
            try:
                re.compile(pattern)
            except re.error as exc:
                message = f"topic_pattern {pattern!r} is not a regular expression: {exc}"
                self.problems.append(doc.problem((*path, "topic_pattern"), message))
        protocol = str(spec.get("security_protocol", "PLAINTEXT"))
        if protocol.startswith("SASL") and not spec.get("sasl_plain_username"):
            message = (
                f"security_protocol {protocol} needs sasl_plain_username and sasl_plain_password"
            )
            self.problems.append(doc.problem((*path, "security_protocol"), message))
        return KafkaSourceConfig(
            brokers=tuple(spec["brokers"]),
            group=spec.get("group") or f"streamctl.{self.root.name}.{name}",
            topics=tuple(spec.get("topics", ())),
            topic_pattern=pattern,
            start_offset=spec.get("start_offset", "earliest"),
            format=spec["format"],
            max_poll_records=int(spec.get("max_poll_records", 500)),
            session_timeout=float(spec.get("session_timeout", DEFAULT_SESSION_TIMEOUT)),
            security={k: spec[k] for k in SECURITY_KEYS if k in spec},
        )

    # -- streamctl.yaml: destinations ------------------------------------------------

    def destinations(
        self, doc: Document, broken: set[NodePath], specs: Any
    ) -> dict[str, DestinationConfig]:
        destinations: dict[str, DestinationConfig] = {}
        if not isinstance(specs, dict):
            return destinations
        for name, spec in specs.items():
            path: NodePath = ("destinations", name)
            if not is_clean(path, broken):
                continue
            kind = spec["type"]
            if kind not in CATALOG:
                message = (
                    f"unknown destination type {kind!r}{suggest(kind, CATALOG)}; "
                    "see `streamctl destinations list`"
                )
                self.problems.append(doc.problem((*path, "type"), message))
                continue
            config = self.destination_config(
                doc, path, CATALOG[kind].catalog, spec.get("config", {})
            )
            line, column = doc.position(path, key=True)
            destinations[name] = DestinationConfig(
                name, kind, config, Location(doc.path, line, column)
            )
        return destinations

    def destination_config(
        self, doc: Document, path: NodePath, entry: CatalogEntry, config: dict[str, Any]
    ) -> dict[str, Any]:
        """The config checked against the catalog, with secrets noted and paths made absolute."""
        fields = {f.name: f for f in entry.config}
        at: NodePath = (*path, "config")
        for spec in entry.config:
            if (*at, spec.name) in doc.unresolved:
                continue  # its missing environment variable is the problem, reported already
            if spec.required and config.get(spec.name) in (None, ""):
                message = f"the {entry.type} destination needs config key {spec.name!r}"
                where = at if (*path, "config") in doc.value_positions else (*path, "type")
                self.problems.append(doc.problem(where, message, key=True))
        resolved: dict[str, Any] = {}
        for key, value in config.items():
            field_spec = fields.get(key)
            if field_spec is None:
                message = (
                    f"unknown config key {key!r} for the {entry.type} destination"
                    f"{suggest(key, fields)}; it takes: {', '.join(fields) or 'nothing'}"
                )
                self.problems.append(doc.problem((*at, key), message, key=True))
                continue
            if not matches_json_type(value, field_spec.type):
                coerced, typed = doc.coerce((*at, key), [field_spec.type])
                value = typed if coerced else value
            if value is not None and not matches_json_type(value, field_spec.type):
                message = f"config key {key!r} must be {TYPE_WORDS[field_spec.type]}, got {type_word(value)}"
                self.problems.append(doc.problem((*at, key), message))
                continue
            if not _is_choice(value, field_spec):
                self.problems.append(
                    doc.problem((*at, key), _choice_message(entry, field_spec, value))
                )
                continue
            if field_spec.project_path and isinstance(value, str):
                value = str((self.root / value).resolve())
            resolved[key] = value
        return resolved

    # -- syncs/*.yaml ------------------------------------------------------------------

    def load_syncs(self, context: SyncContext) -> tuple[list[SyncConfig], set[str]]:
        syncs: list[SyncConfig] = []
        first_file: dict[str, str] = {}
        for relative in self.files("syncs"):
            doc, broken = self.read(relative, "sync")
            name = sync_name(doc)
            if name in first_file:
                where: NodePath = (
                    ("name",) if isinstance(doc.data, dict) and "name" in doc.data else ()
                )
                message = f"duplicate sync name {name!r} (also {first_file[name]})"
                self.problems.append(doc.problem(where, message))
            first_file.setdefault(name, relative)
            if isinstance(doc.data, dict):
                for kind in ("source", "destination"):
                    if isinstance(doc.data.get(kind), str):
                        self.sync_references.add((kind, doc.data[kind]))
            sync, problems = build_sync(doc, broken, context)
            self.problems.extend(problems)
            if sync is not None:
                syncs.append(sync)
        return syncs, set(first_file)

    def settle_array_bodies(
        self, destinations: dict[str, DestinationConfig], syncs: list[SyncConfig]
    ) -> dict[str, DestinationConfig]:
        """SPEC §6: a webhook's body is an array when its syncs batch, an object otherwise.

        One destination object serves every sync that names it, so the choice is made
        here, once, as the `array_body` config key of destinations that declare it."""
        settled = dict(destinations)
        for name, destination in destinations.items():
            entry = CATALOG[destination.type].catalog
            if ARRAY_BODY not in {f.name for f in entry.config} or ARRAY_BODY in destination.config:
                continue
            users = [s for s in syncs if s.destination == name]
            batching = {s.name: (s.delivery.batch_size or entry.batch_size) > 1 for s in users}
            if len(set(batching.values())) > 1:
                singles = ", ".join(sorted(n for n, b in batching.items() if not b))
                for sync in users:
                    if batching[sync.name]:
                        message = (
                            f"sync {sync.name!r} batches to {destination.type} destination {name!r} "
                            f"(a JSON array body) but {singles} send one object per request: "
                            f"use the same batch_size, or set {ARRAY_BODY} on the destination"
                        )
                        loc = sync.location
                        self.problems.append(Problem(loc.path, loc.line, loc.column, message))
            elif any(batching.values()):
                config = {**destination.config, ARRAY_BODY: True}
                settled[name] = dataclasses.replace(destination, config=config)
        return settled

    # -- streamctl.yaml: alerts --------------------------------------------------------

    def alerts(
        self, doc: Document, broken: set[NodePath], spec: Any, syncs: Collection[str]
    ) -> AlertsConfig | None:
        if not isinstance(spec, dict):
            return AlertsConfig()
        channels = self.channels(doc, broken, spec.get("channels"))
        rules = self.rules(doc, broken, spec.get("rules"), syncs, _names(spec.get("channels")))
        if channels is None or rules is None:
            return None
        interval = spec.get("interval", AlertsConfig.interval)
        if not is_clean(("alerts", "interval"), broken):
            return None
        return AlertsConfig(channels=channels, rules=rules, interval=parse_duration(interval))

    def channels(
        self, doc: Document, broken: set[NodePath], specs: Any
    ) -> dict[str, AlertChannel] | None:
        if not isinstance(specs, dict):
            return {}
        channels: dict[str, AlertChannel] = {}
        for name, spec in specs.items():
            path: NodePath = ("alerts", "channels", name)
            if not is_clean(path, broken):
                return None
            kind = spec["type"]
            required, optional = CHANNELS[kind].required, CHANNELS[kind].optional
            for key in sorted(required - spec.keys()):
                message = f"a {kind} alert channel needs {key!r}"
                self.problems.append(doc.problem(path, message, key=True))
            for key in sorted(spec.keys() - required - optional - {"type"}):
                allowed = ", ".join(sorted(required | optional))
                message = f"{key!r} does not apply to {kind} alert channels (they take: {allowed})"
                self.problems.append(doc.problem((*path, key), message, key=True))
            config = {k: v for k, v in spec.items() if k != "type"}
            channels[name] = AlertChannel(name, kind, config)
        return channels

    def rules(
        self,
        doc: Document,
        broken: set[NodePath],
        specs: Any,
        syncs: Collection[str],
        channels: Collection[str],
    ) -> tuple[AlertRule, ...] | None:
        if not isinstance(specs, list):
            return ()
        rules: list[AlertRule] = []
        for index, spec in enumerate(specs):
            path: NodePath = ("alerts", "rules", index)
            if not is_clean(path, broken):
                return None
            sync = spec.get("sync", "*")
            if sync != "*" and sync not in syncs:
                message = (
                    f"alert rule {spec['name']!r}: unknown sync {sync!r}{suggest(sync, syncs)}"
                )
                self.problems.append(doc.problem((*path, "sync"), message))
            for i, channel in enumerate(spec.get("notify", ())):
                if channel not in channels:
                    message = f"alert rule {spec['name']!r}: unknown channel {channel!r}{suggest(channel, channels)}"
                    self.problems.append(doc.problem((*path, "notify", i), message))
            if spec["when"] != "no_events" and "above" not in spec and "below" not in spec:
                message = f"alert rule {spec['name']!r} needs a threshold: 'above' or 'below'"
                self.problems.append(doc.problem(path, message))
            line, column = doc.position(path)
            rules.append(
                AlertRule(
                    name=spec["name"],
                    sync=sync,
                    when=spec["when"],
                    above=spec.get("above"),
                    below=spec.get("below"),
                    window=parse_duration(spec.get("window", AlertRule.window)),
                    severity=spec.get("severity", AlertRule.severity),
                    notify=tuple(spec.get("notify", ())),
                    location=Location(doc.path, line, column),
                )
            )
        return tuple(rules)

    # -- warnings ------------------------------------------------------------------------

    def warn_unused(
        self,
        main: Document,
        data: dict[str, Any],
        contract_files: Mapping[str, Document],
    ) -> None:
        for kind in ("source", "destination"):
            for name in _names(data.get(f"{kind}s")):
                if (kind, name) not in self.sync_references:
                    consequence = (
                        ": its events are stored but never delivered" if kind == "source" else ""
                    )
                    message = f"{kind} {name!r} is used by no sync{consequence}"
                    problem = main.problem(
                        (f"{kind}s", name), message, severity="warning", key=True
                    )
                    self.problems.append(problem)
        sources = data.get("sources")
        specs = sources.values() if isinstance(sources, dict) else ()
        used = {spec.get("contract") for spec in specs if isinstance(spec, dict)}
        for name, doc in contract_files.items():
            if name not in used:
                message = f"contract {name!r} is used by no source (set `contract: {name}` on one)"
                self.problems.append(doc.problem((), message, severity="warning"))


def _names(specs: Any) -> list[str]:
    return list(specs) if isinstance(specs, dict) else []


def _is_choice(value: Any, spec: ConfigField) -> bool:
    """The value is one the field accepts (empty and unset mean its default, as in `create`)."""
    return not spec.choices or value in (None, "", *spec.choices)


def _choice_message(entry: CatalogEntry, spec: ConfigField, value: Any) -> str:
    # Compared without case and spaces, so `EU` or `eu ` still point at `eu`.
    hint = suggest(str(value).strip().lower(), spec.choices)
    return (
        f"config key {spec.name!r} of the {entry.type} destination is {value!r}{hint}; "
        f"it takes one of {', '.join(spec.choices)}"
    )


def _entries(specs: Any) -> list[dict[str, Any]]:
    """The entries of a `name: {...}` section that are mappings, whatever else is wrong."""
    return [s for s in specs.values() if isinstance(s, dict)] if isinstance(specs, dict) else []


def _store_url(value: object) -> str | None:
    """`store:` when it is a PostgreSQL URL (else it is a SQLite file)."""
    if isinstance(value, str) and value.lower().startswith(STORE_URL_SCHEMES):
        return value
    return None
