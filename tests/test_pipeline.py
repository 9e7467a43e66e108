from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from streamctl.contracts import compile_contract
from streamctl.core.errors import UsageError
from streamctl.core.model import (
    EventTypeRule,
    FunctionRef,
    Project,
    SourceConfig,
    SyncConfig,
)
from streamctl.core.outcomes import Status
from streamctl.destinations.base import (
    CatalogEntry,
    Destination,
    EventTypeSpec,
    FieldSpec,
    HttpRequest,
    Payload,
)
from streamctl.filters import compile_filter
from streamctl.functions import close_functions
from streamctl.mappings import SyncVars, compile_mapping
from streamctl.pipeline.process import Origins, Pipeline

PURCHASE = EventTypeSpec(
    "purchase",
    required=(FieldSpec("user", "string"), FieldSpec("total", "number")),
    optional=(FieldSpec("name", "string"),),
)
CUSTOM = EventTypeSpec("custom", open_fields=True)


class ShopDestination(Destination):
    """A destination whose vendor refuses event names longer than 20 characters."""

    catalog = CatalogEntry(
        type="shop", description="test", docs="", config=(), event_types=(PURCHASE, CUSTOM)
    )

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        name = payload.get("name", "")
        return f"name {name!r} is longer than 20 characters" if len(name) > 20 else None

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        return HttpRequest("POST", "http://127.0.0.1:9/shop", json=list(payloads))


@pytest.fixture(autouse=True)
def _stop_workers():
    yield
    close_functions()


def rule(event_type, filter_spec, required, sync="s"):
    spec = PURCHASE if event_type == "purchase" else CUSTOM
    return EventTypeRule(
        type=event_type,
        filter=compile_filter(filter_spec) if filter_spec is not None else None,
        mapping=compile_mapping(
            {"required": required}, sync=SyncVars(sync, "web", "shop"), event_type=spec
        ),
    )


ORDER_FILTER = {"field": "event", "op": "eq", "value": "Order Completed"}
PURCHASE_RULE = rule(
    "purchase",
    ORDER_FILTER,
    {
        "user": {"field": "userId"},
        "total": {"field": "properties.total"},
        "name": {"field": "event"},
    },
)
CUSTOM_RULE = rule("custom", None, {"name": {"field": "event"}})


def project(*syncs, contract=None, root=Path(".")):
    return Project(
        root=root,
        store_path=root / "state.db",
        sources={
            "web": SourceConfig("web", "http", contract="web" if contract else None),
            "app": SourceConfig("app", "http"),
        },
        contracts={"web": compile_contract(contract, "web")} if contract else {},
        syncs=tuple(syncs),
    )


def sync(name="s", rules=(PURCHASE_RULE, CUSTOM_RULE), **kw):
    return SyncConfig(
        name=name,
        source=kw.pop("source", "web"),
        destination="shop",
        event_types=tuple(rules),
        **kw,
    )


def pipeline(*syncs, contract=None):
    return Pipeline(project(*syncs, contract=contract), {"shop": ShopDestination("shop", {})})


def event(name="Order Completed", mid="m1", **extra):
    return {
        "type": "track",
        "event": name,
        "userId": "u1",
        "messageId": mid,
        "properties": {"total": 9.5},
        **extra,
    }


def test_first_matching_event_type_is_mapped_and_pending():
    [result] = pipeline(sync()).process("web", [event()])
    [decision] = result.decisions
    assert decision.status is Status.PENDING
    assert (decision.sync, decision.event_type, decision.message_id) == ("s", "purchase", "m1")
    assert decision.payload == {"user": "u1", "total": 9.5, "name": "Order Completed"}
    assert decision.user_key == "u1"
    assert decision.origin_message_id == "m1"
    assert result.contract is None


def test_match_all_sends_every_matching_type():
    [result] = pipeline(sync(match="all")).process("web", [event()])
    assert [(d.event_type, d.status) for d in result.decisions] == [
        ("purchase", Status.PENDING),
        ("custom", Status.PENDING),
    ]


def test_no_matching_type_is_filtered():
    [result] = pipeline(sync(rules=(PURCHASE_RULE,))).process("web", [event("Viewed")])
    assert [(d.status, d.event_type, d.error) for d in result.decisions] == [
        (Status.FILTERED, None, "no event type matched")
    ]


def test_a_missing_required_field_is_a_mapping_error_naming_the_field():
    [result] = pipeline(sync()).process("web", [event(properties={})])
    [decision] = result.decisions
    assert decision.status is Status.MAPPING_ERROR
    assert decision.event_type == "purchase"
    assert "total" in decision.error


def test_a_payload_the_destination_refuses_is_a_mapping_error():
    long_name = rule("custom", None, {"name": {"static": "a name far too long for it"}})
    [result] = pipeline(sync(rules=(long_name,))).process("web", [event()])
    [decision] = result.decisions
    assert decision.status is Status.MAPPING_ERROR
    assert decision.error == "name 'a name far too long for it' is longer than 20 characters"
    assert decision.payload == {"name": "a name far too long for it"}


CONTRACT = {
    "on_undeclared_event": "block",
    "events": [
        {
            "name": "Order Completed",
            "on_violation": "block",
            "on_undeclared_fields": "omit",
            "properties": {
                "type": "object",
                "properties": {"total": {"type": "number", "minimum": 0}},
            },
        }
    ],
}


def test_a_blocked_event_is_blocked_for_every_sync_of_the_source_with_violations_recorded():
    pipe = pipeline(sync("a"), sync("b"), sync("other", source="app"), contract=CONTRACT)
    good, bad = pipe.process("web", [event(), event(mid="m2", properties={"total": -1})])
    assert [d.status for d in good.decisions] == [Status.PENDING, Status.PENDING]
    assert [(d.sync, d.status) for d in bad.decisions] == [
        ("a", Status.BLOCKED),
        ("b", Status.BLOCKED),
    ]
    assert (
        bad.decisions[0].error
        == "blocked by contract 'web': /properties/total: -1 is less than the minimum of 0"
    )
    assert bad.contract.outcome == "blocked"
    assert [v.pointer for v in bad.contract.violations] == ["/properties/total"]


def test_omitted_fields_never_reach_the_mappings():
    whole = rule("custom", None, {"properties": {"field": "properties"}})
    [result] = pipeline(sync(rules=(whole,)), contract=CONTRACT).process(
        "web", [event(properties={"total": 1, "secret": "x"})]
    )
    assert result.contract.outcome == "omitted"
    assert result.decisions[0].payload == {"properties": {"total": 1}}
    assert result.event["properties"] == {
        "total": 1,
        "secret": "x",
    }  # the received event is kept as received


def write_function(tmp_path, source, timeout=5.0):
    path = tmp_path / "functions" / "fn.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    return FunctionRef(path=path, timeout=timeout)


SPLIT_AND_DROP = """
def transform_events(events, settings):
    out = []
    for event in events:
        if event["event"] == "Ping":
            continue
        if event["event"] == "Cart":
            for i, item in enumerate(event["properties"]["items"]):
                out.append({**event, "messageId": f"{event['messageId']}-{i}", "event": "Order Completed",
                            "properties": {"total": item}})
            continue
        out.append(event)
    return out
"""


def test_function_drops_and_splits_linked_to_the_received_event(tmp_path):
    fn = write_function(tmp_path, SPLIT_AND_DROP)
    cart = event("Cart", mid="c1", properties={"items": [1, 2]})
    kept, dropped, split = pipeline(sync(function=fn)).process(
        "web", [event(), event("Ping", mid="p1"), cart]
    )
    assert [(d.status, d.message_id) for d in kept.decisions] == [(Status.PENDING, "m1")]
    assert [(d.status, d.error) for d in dropped.decisions] == [
        (Status.DROPPED, "the function left the event out")
    ]
    assert [
        (d.status, d.message_id, d.origin_message_id, d.payload["total"]) for d in split.decisions
    ] == [
        (Status.PENDING, "c1-0", "c1", 1),
        (Status.PENDING, "c1-1", "c1", 2),
    ]
    assert split.decisions[0].event["event"] == "Order Completed"


def test_a_function_error_fails_the_batch_of_that_sync_only(tmp_path):
    fn = write_function(
        tmp_path, "def transform_events(events, settings):\n    raise RuntimeError('nope')\n"
    )
    first, second = pipeline(sync("with-fn", function=fn), sync("plain")).process(
        "web", [event(), event(mid="m2")]
    )
    for result in (first, second):
        failed, delivered = result.decisions
        assert (failed.sync, failed.status) == ("with-fn", Status.FUNCTION_ERROR)
        assert "raised RuntimeError: nope" in failed.error
        assert "RuntimeError: nope" in failed.traceback
        assert (delivered.sync, delivered.status) == ("plain", Status.PENDING)


def test_syncs_narrow_the_run_and_unknown_names_are_refused():
    pipe = pipeline(sync("a"), sync("b"))
    [result] = pipe.process("web", [event()], syncs=["b"])
    assert [d.sync for d in result.decisions] == ["b"]
    with pytest.raises(UsageError, match="unknown sync 'c'"):
        pipe.process("web", [event()], syncs=["c"])
    with pytest.raises(UsageError, match="unknown source 'nope'"):
        pipe.process("nope", [event()])


def test_syncs_of_another_source_are_not_run():
    [result] = pipeline(sync("a", source="app")).process("web", [event()])
    assert result.decisions == []


def test_origins_of_function_output():
    origins = Origins(["abc", "abc-1", "x:y", "dup", "dup"])
    assert origins.of("abc-1") == 1  # exact wins over prefix
    assert origins.of("abc-2") == 0
    assert origins.of("fresh") == 0  # nothing matches: the one before it
    assert origins.of("abc-2:3") == 0
    assert origins.of("x:y.4") == 2
    assert origins.of("fresh") == 2
    assert [origins.of("dup"), origins.of("dup"), origins.of("dup")] == [3, 4, 4]


def test_a_duplicated_message_id_in_one_batch_is_not_dropped(tmp_path):
    fn = write_function(tmp_path, "def transform_events(events, settings):\n    return events\n")
    first, second = pipeline(sync(function=fn)).process("web", [event(), event()])
    assert [d.status for d in first.decisions + second.decisions] == [
        Status.PENDING,
        Status.PENDING,
    ]
