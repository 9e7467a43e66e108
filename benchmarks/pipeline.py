"""Events per second per core through filters + mappings (no delivery), SPEC §1.

    .venv/bin/python benchmarks/pipeline.py [--events N] [--rounds R]

Events come from ../shared/bench/gen_events.py (the shared deterministic mix: 40%
"Order Completed" with products, 20% other tracks, 20% identify, 15% page, 5% group),
parsed once with orjson. Each case runs a sync shaped like the Segment actions peer of
the shared kit: event type `purchase` (filter: type = track and event = Order
Completed, 8 mapped fields) and a catch-all `custom` type, `match: first`, so every
event is filtered and mapped. The cases:

1. field/static  — every value is a `field` or a `static`;
2. liquid        — as 1, plus one Liquid template rendered per event
                   (`{{ row.event }} by {{ row.userId }}`: takes the fast path);
   liquid (tags)  — the same output written with an `{% if %}` tag, which python-liquid
                   itself renders (no fast path);
3. contract      — as 1, with the source's contract checked on every event first.

Rates are counted over CPU time of this process (time.process_time), so they are per
core and less disturbed by other work on a shared machine; wall-clock rates are
printed beside them. Targets (issue 3): 100,000 / 40,000 / 50,000 events/s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streamctl.core.errors import MappingError
from streamctl.destinations.base import EventTypeSpec, FieldSpec, MappedEvent
from streamctl.filters import Predicate, compile_filter
from streamctl.mappings import CompiledMapping, SyncVars, compile_mapping

GENERATOR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "gen_events.py"
TARGETS = {"field/static": 100_000, "liquid": 40_000, "contract": 50_000}  # "liquid (tags)": none

SYNC = SyncVars("orders-to-webhook", "web", "peer-webhook")

PURCHASE = EventTypeSpec(
    "purchase",
    required=(
        FieldSpec("user_id", "string"),
        FieldSpec("event_name", "string"),
        FieldSpec("order_id", "string"),
        FieldSpec("revenue", "number"),
        FieldSpec("currency", "string"),
    ),
)
CUSTOM = EventTypeSpec("custom", required=(FieldSpec("user_id", "string"),), open_fields=True)

ORDER_FILTER = {
    "all": [
        {"field": "type", "op": "eq", "value": "track"},
        {"field": "event", "op": "eq", "value": "Order Completed"},
    ]
}


def purchase_mapping(label: dict[str, Any] | None) -> dict[str, Any]:
    required: dict[str, Any] = {
        "user_id": {"field": "userId"},
        "event_name": {"field": "event"},
        "order_id": {"field": "properties.order_id"},
        "revenue": {"field": "properties.total"},
        "currency": {"static": "USD"},
    }
    if label is not None:
        required["label"] = label
    return {
        "required": required,
        "user": {"email": {"field": "context.traits.email"}},
        "properties": {"properties": {"field": "properties"}},
    }


def custom_mapping(label: dict[str, Any] | None) -> dict[str, Any]:
    required: dict[str, Any] = {
        "user_id": {"field": "userId"},
        "name": {"field": "event"},
        "type": {"field": "type"},
    }
    if label is not None:
        required["label"] = label
    return {
        "required": required,
        "user": {
            "email": {"field": "context.traits.email"},
            "plan": {"field": "context.traits.plan"},
        },
        "properties": {"properties": {"field": "properties"}, "traits": {"field": "traits"}},
    }


Rules = list[tuple[str, Predicate | None, CompiledMapping]]


def build_rules(label: dict[str, Any] | None) -> Rules:
    return [
        (
            "purchase",
            compile_filter(ORDER_FILTER),
            compile_mapping(purchase_mapping(label), sync=SYNC, event_type=PURCHASE),
        ),
        ("custom", None, compile_mapping(custom_mapping(label), sync=SYNC, event_type=CUSTOM)),
    ]


def process(rules: Rules, events: list[dict[str, Any]]) -> int:
    """What the pipeline does per event and sync with `match: first`; returns events mapped."""
    mapped = 0
    for event in events:
        for _type, predicate, mapping in rules:
            if predicate is None or predicate(event):
                try:
                    result: MappedEvent = mapping.apply(event)
                except MappingError:
                    break
                mapped += bool(result.required)
                break
    return mapped


CONTRACT = {
    "name": "web",
    "on_undeclared_event": "allow",
    "events": [
        {
            "name": "Order Completed",
            "on_violation": "block",
            "on_undeclared_fields": "allow",
            "properties": {
                "type": "object",
                "required": ["order_id", "total", "products"],
                "properties": {
                    "order_id": {"type": "string"},
                    "total": {"type": "number", "minimum": 0},
                    "currency": {"type": "string", "enum": ["USD", "EUR"]},
                    "coupon": {"type": ["string", "null"]},
                    "products": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["product_id", "price"],
                            "properties": {
                                "product_id": {"type": "string"},
                                "price": {"type": "number"},
                                "quantity": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                },
            },
        },
        {
            "name": "Product Viewed",
            "properties": {
                "type": "object",
                "required": ["product_id"],
                "properties": {"product_id": {"type": "string"}},
            },
        },
        {
            "name": "identify",
            "type": "identify",
            "traits": {
                "type": "object",
                "properties": {"email": {"type": "string"}, "consent": {"type": "boolean"}},
            },
        },
    ],
}


def contract_case() -> Callable[[list[dict[str, Any]]], int] | str:
    """The contract case, or why it cannot run yet."""
    try:
        from streamctl.contracts import compile_contract

        contract = compile_contract(CONTRACT, name="web")
    except NotImplementedError:
        return "contract: not available yet (streamctl.contracts.compile_contract is a stub)"
    rules = build_rules(None)

    def run(events: list[dict[str, Any]]) -> int:
        passed = []
        for event in events:
            result = contract.check(event)
            if result.outcome != "blocked":
                passed.append(result.event)
        return process(rules, passed)

    return run


def load_events(n: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "events.ndjson"
        subprocess.run([sys.executable, str(GENERATOR), str(n), str(out)], check=True)
        return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def measure(
    run: Callable[[list[dict[str, Any]]], int], events: list[dict[str, Any]], rounds: int
) -> tuple[float, float, int]:
    """Best CPU-time and wall-clock rates over `rounds` passes."""
    best_cpu = best_wall = 0.0
    mapped = 0
    for _ in range(rounds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        mapped = run(events)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        best_cpu = max(best_cpu, len(events) / cpu if cpu else 0.0)
        best_wall = max(best_wall, len(events) / wall)
    return best_cpu, best_wall, mapped


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    events = load_events(args.events)
    template = {"template": "{{ row.event }} by {{ row.userId }}"}
    tagged = {"template": "{% if row.userId %}{{ row.event }} by {{ row.userId }}{% endif %}"}
    plain_rules, liquid_rules, tagged_rules = (
        build_rules(None),
        build_rules(template),
        build_rules(tagged),
    )
    cases: dict[str, Callable[[list[dict[str, Any]]], int] | str] = {
        "field/static": lambda evs: process(plain_rules, evs),
        "liquid": lambda evs: process(liquid_rules, evs),
        "liquid (tags)": lambda evs: process(tagged_rules, evs),
        "contract": contract_case(),
    }
    print(f"{len(events):,} events, best of {args.rounds} rounds, filter + mapping, no delivery")
    below = []
    for name, run in cases.items():
        if isinstance(run, str):
            print(f"  {run}")
            continue
        cpu_rate, wall_rate, mapped = measure(run, events, args.rounds)
        target = TARGETS.get(name)
        if target is None:
            verdict = "informational"
        elif cpu_rate >= target:
            verdict = f"target {target:,}: ok"
        else:
            verdict = f"target {target:,}: BELOW TARGET"
            below.append(name)
        print(
            f"  {name:<13} {cpu_rate:>10,.0f} events/s per core (CPU time)  "
            f"{wall_rate:>10,.0f} events/s wall  {verdict}  ({mapped:,} mapped)"
        )
    return 1 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())
