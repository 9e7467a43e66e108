"""Loading a project folder into the compiled, immutable Project."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from streamctl.config.loader import check_project, load_project
from streamctl.core.errors import ConfigError
from streamctl.destinations.registry import CATALOG
from tests.fakes.acme import AcmeDestination

REPO = Path(__file__).resolve().parent.parent

MAIN = """\
version: 1
store: state/streamctl.db
listen: { host: 0.0.0.0, port: "${PORT:-9090}" }
retention_days: 7
sources:
  web:
    type: http
    write_keys: ["${WEB_KEY:-dev-web-key}", second-key]
    contract: web
  billing:
    type: webhook
    secret: ${BILLING_SECRET}
    signature_header: Stripe-Signature
    event_name: { field: type }
destinations:
  out:
    type: file
    config: { path: out/events.ndjson }
  hook:
    type: webhook
    config:
      url: http://127.0.0.1:9/hook
      headers: { Authorization: "Bearer hook-token-1" }
alerts:
  interval: 10s
  channels:
    oncall: { type: slack, webhook_url: "https://hooks.slack.test/T0/B0/slack-credential" }
    mail: { type: email, host: smtp.test, from: a@test, to: [b@test], password: mail-password }
  rules:
    - { name: errors, sync: web-to-out, when: error_rate, above: 0.05, window: 5m, severity: critical, notify: [oncall, mail] }
    - { name: quiet, when: no_events, window: 1h }
"""
SYNC = """\
source: web
destination: out
function:
  path: functions/tag.py
  settings: { tag: hello }
  timeout: 2s
match: all
event_types:
  - type: custom
    filter: { field: event, op: eq, value: Order Completed }
    mappings:
      required:
        order_id: { field: properties.order_id }
  - type: custom
    mappings:
      required:
        event: { field: event }
delivery:
  batch_size: 20
  concurrency: 2
  rate_limit: 6000/m
  max_attempts: 3
  max_age: 1h
  backoff: { initial: 500ms, max: 30s }
  ordering: per_user
  timeout: 10s
"""
HOOK_SYNC = """\
name: billing-to-hook
source: billing
destination: hook
event_types:
  - type: custom
    mappings:
      required:
        kind: { field: event }
"""
CONTRACT = """\
name: web
events:
  - name: Order Completed
    properties: { type: object, required: [order_id] }
"""
FUNCTION = """\
def transform_events(events, settings):
    return events
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def project_dir(tmp_path):
    return write(
        tmp_path,
        {
            "streamctl.yaml": MAIN,
            "syncs/web-to-out.yaml": SYNC,
            "syncs/hook.yaml": HOOK_SYNC,
            "contracts/web.yaml": CONTRACT,
            "functions/tag.py": FUNCTION,
        },
    )


ENV = {"BILLING_SECRET": "whsec-billing-42", "WEB_KEY": "live-web-key-7"}


def test_every_section_is_parsed(project_dir):
    project = load_project(project_dir, env=ENV)
    assert project.root == project_dir.resolve()
    assert project.store_path == Path("state/streamctl.db")
    assert (project.listen.host, project.listen.port) == ("0.0.0.0", 9090)
    assert project.retention_days == 7
    web, billing = project.sources["web"], project.sources["billing"]
    assert web.write_keys == ("live-web-key-7", "second-key")
    assert web.contract == "web"
    assert (billing.type, billing.secret, billing.signature_header, billing.event_name_field) == (
        "webhook",
        "whsec-billing-42",
        "Stripe-Signature",
        "type",
    )
    assert set(project.contracts) == {"web"}
    assert project.destinations["out"].config == {"path": str(project_dir / "out/events.ndjson")}
    assert project.destinations["hook"].type == "webhook"


def test_syncs_are_compiled(project_dir):
    project = load_project(project_dir, env=ENV)
    assert [s.name for s in project.syncs] == ["billing-to-hook", "web-to-out"]
    sync = project.sync("web-to-out")
    assert (sync.source, sync.destination, sync.match) == ("web", "out", "all")
    order, catch_all = sync.event_types
    event = {"type": "track", "event": "Order Completed", "properties": {"order_id": "o1"}}
    assert order.filter is not None and order.filter(event)
    assert not order.filter({**event, "event": "Signed Up"})
    assert catch_all.filter is None
    assert order.mapping.apply(event).required == {"order_id": "o1"}
    assert str(order.location) == "syncs/web-to-out.yaml:9:5"
    assert project.syncs_for_source("billing") == (project.sync("billing-to-hook"),)


def test_function_and_delivery_policy(project_dir):
    sync = load_project(project_dir, env=ENV).sync("web-to-out")
    assert sync.function is not None
    assert sync.function.path == project_dir.resolve() / "functions/tag.py"
    assert dict(sync.function.settings) == {"tag": "hello"}
    assert sync.function.timeout == 2.0
    d = sync.delivery
    assert (d.batch_size, d.concurrency, d.rate_limit, d.max_attempts) == (20, 2, 100.0, 3)
    assert (d.max_age, d.backoff.initial, d.backoff.max) == (3600.0, 0.5, 30.0)
    assert (d.ordering, d.timeout) == ("per_user", 10.0)


def test_delivery_defaults(project_dir):
    delivery = load_project(project_dir, env=ENV).sync("billing-to-hook").delivery
    assert delivery.batch_size is None  # the destination's default
    assert (delivery.max_attempts, delivery.max_age) == (None, 4 * 3600.0)  # time-based


def test_alerts(project_dir):
    alerts = load_project(project_dir, env=ENV).alerts
    assert alerts.interval == 10.0
    assert alerts.channels["oncall"].type == "slack"
    assert alerts.channels["mail"].config["to"] == ["b@test"]
    errors, quiet = alerts.rules
    assert (errors.sync, errors.when, errors.above, errors.window) == (
        "web-to-out",
        "error_rate",
        0.05,
        300.0,
    )
    assert (errors.severity, errors.notify) == ("critical", ("oncall", "mail"))
    assert (quiet.sync, quiet.when, quiet.window, quiet.severity) == (
        "*",
        "no_events",
        3600.0,
        "warning",
    )


def test_secrets_hold_environment_values_secret_fields_and_credentials(project_dir):
    secrets = load_project(project_dir, env=ENV).secrets
    assert {"whsec-billing-42", "live-web-key-7"} <= secrets  # from the environment
    assert "Bearer hook-token-1" in secrets  # webhook headers are secret
    assert {"https://hooks.slack.test/T0/B0/slack-credential", "mail-password"} <= secrets
    # Write keys too, literal or not: a write key is never printed (SPEC §4).
    assert "second-key" in secrets


def test_the_project_is_immutable(project_dir):
    project = load_project(project_dir, env=ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        project.syncs[0].name = "other"  # type: ignore[misc]


def test_every_problem_is_raised_at_once(project_dir):
    (project_dir / "syncs/hook.yaml").write_text(
        HOOK_SYNC.replace("destination: hook", "destination: hock")
    )
    (project_dir / "contracts/web.yaml").write_text(CONTRACT + "bogus: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_project(project_dir, env={})
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "contracts/web.yaml:5:1: unknown key 'bogus'",
        "streamctl.yaml:12:13: environment variable BILLING_SECRET is not set and has no default",
        "syncs/hook.yaml:3:14: unknown destination 'hock' (did you mean 'hook'?); "
        "streamctl.yaml defines destinations: hook, out",
    ]
    assert str(caught.value).startswith("contracts/web.yaml:5:1: unknown key 'bogus' (and 2 more)")


def test_check_project_returns_warnings_with_the_project(project_dir):
    (project_dir / "syncs/hook.yaml").unlink()
    project, problems = check_project(project_dir, env=ENV)
    assert project is not None
    assert [str(p) for p in problems] == [
        "streamctl.yaml:10:3: warning: source 'billing' is used by no sync: its events are stored but never delivered",
        "streamctl.yaml:19:3: warning: destination 'hook' is used by no sync",
    ]
    load_project(project_dir, env=ENV)  # warnings do not fail a load...
    with pytest.raises(ConfigError):
        load_project(project_dir, env=ENV, strict=True)  # ...unless strict


def test_problem_messages_never_hold_secrets(tmp_path):
    write(
        tmp_path,
        {
            "streamctl.yaml": """\
                sources:
                  web: { type: http, write_keys: [k1234] }
                destinations:
                  out: { type: "${DEST_TYPE}" }
                """,
        },
    )
    _, problems = check_project(tmp_path, env={"DEST_TYPE": "sk-live-abcdef"})
    text = "\n".join(str(p) for p in problems)
    assert "unknown destination type '***'" in text
    assert "sk-live-abcdef" not in text


def test_a_vendor_destination_is_checked_against_its_catalog(tmp_path, monkeypatch):
    monkeypatch.setitem(CATALOG, "acme", AcmeDestination)
    write(
        tmp_path,
        {
            "streamctl.yaml": """\
                sources: { web: { type: http, write_keys: [k1234] } }
                destinations: { crm: { type: acme, config: { api_key: "${ACME_KEY}" } } }
                """,
            "syncs/to-crm.yaml": """\
                source: web
                destination: crm
                event_types:
                  - type: purchase
                    filter: { field: event, op: eq, value: Order Completed }
                    mappings:
                      required:
                        user_id: { field: userId }
                        price: { static: 10 }
                        currency: { static: USD }
                        quantity: { static: 2.0 }
                  - type: custom
                    mappings:
                      required: { name: { field: event } }
                """,
        },
    )
    project = load_project(tmp_path, env={"ACME_KEY": "acme-key-123"})
    assert project.destinations["crm"].config == {"api_key": "acme-key-123"}
    assert "acme-key-123" in project.secrets


def test_sync_names_default_to_the_file_name(tmp_path):
    write(
        tmp_path,
        {
            "streamctl.yaml": "sources: { web: { type: http, write_keys: [k1234] } }\n"
            "destinations: { out: { type: console } }\n",
            "syncs/to-console.yml": "source: web\ndestination: out\nevent_types: [{ type: custom }]\n",
        },
    )
    assert [s.name for s in load_project(tmp_path, env={}).syncs] == ["to-console"]


def test_the_repository_is_a_valid_default_project():
    project, problems = check_project(REPO, env={})
    assert problems == []
    assert project is not None
    assert {d.type for d in project.destinations.values()} <= {"file", "console"}
    assert project.store_path == Path(".streamctl/state.db")


def test_the_example_events_are_many_and_realistic():
    import json

    lines = (REPO / "examples/events.ndjson").read_text().splitlines()
    assert len(lines) >= 1000
    events = [json.loads(line) for line in lines]
    assert {e["type"] for e in events} == {"track", "identify", "page", "group"}
    assert all(e["messageId"] and (e.get("userId") or e.get("anonymousId")) for e in events)
    assert len({e["messageId"] for e in events}) == len(events)


def test_a_webhook_fed_by_a_batching_sync_sends_array_bodies(project_dir):
    batching = HOOK_SYNC + "delivery: { batch_size: 25 }\n"
    (project_dir / "syncs/hook.yaml").write_text(batching)
    project = load_project(project_dir, env=ENV)
    assert project.destinations["hook"].config["array_body"] is True
    assert "array_body" not in project.destinations["out"].config  # file has no such key


def test_syncs_that_disagree_on_webhook_batching_are_an_error(project_dir):
    (project_dir / "syncs/hook.yaml").write_text(HOOK_SYNC + "delivery: { batch_size: 25 }\n")
    (project_dir / "syncs/hook-single.yaml").write_text(
        HOOK_SYNC.replace("name: billing-to-hook", "name: single")
    )
    _, problems = check_project(project_dir, env=ENV)
    assert [str(p) for p in problems if p.severity == "error"] == [
        "syncs/hook.yaml:1:7: sync 'billing-to-hook' batches to webhook destination 'hook' "
        "(a JSON array body) but single send one object per request: use the same batch_size, "
        "or set array_body on the destination"
    ]


def test_the_shipped_schema_lists_the_channel_types_and_keys_of_the_one_table() -> None:
    import json
    from importlib import resources

    from streamctl.channels import CHANNELS

    text = resources.files("streamctl.config.schemas").joinpath("streamctl.schema.json").read_text()
    channel = json.loads(text)["definitions"]["channel"]
    assert sorted(channel["properties"]["type"]["enum"]) == sorted(CHANNELS)
    keys = {k for kind in CHANNELS.values() for k in kind.required | kind.optional}
    assert set(channel["properties"]) == keys | {"type"}
