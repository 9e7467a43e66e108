"""`streamctl alerts check|list` on a project on disk, a real store and real receivers."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.store import SqliteStore
from tests.fakes.http import FakeServer, Reply
from tests.fakes.traffic import Traffic

SLACK_TOKEN = "T0001/B0001/XXXXSLACKSECRET"
ROUTING_KEY = "pd-routing-key-0123456789"


def write_project(root: Path, slack: str, hook: str, pager: str) -> None:
    (root / "syncs").mkdir()
    (root / "streamctl.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            store: state.db
            sources:
              web: {{ type: http, write_keys: [dev-key] }}
            destinations:
              hook: {{ type: webhook, config: {{ url: "http://127.0.0.1:9/never" }} }}
            alerts:
              channels:
                slack: {{ type: slack, webhook_url: "{slack}/services/${{SLACK_TOKEN}}" }}
                hook: {{ type: webhook, url: "{hook}/alerts", headers: {{ X-Team: data }} }}
                pager: {{ type: pagerduty, routing_key: "${{PD_ROUTING_KEY}}", base_url: "{pager}" }}
              rules:
                - name: hook errors
                  sync: to-hook
                  when: error_rate
                  above: 0.2
                  window: 5m
                  severity: critical
                  notify: [slack, hook, pager]
                - name: any failure
                  sync: "*"
                  when: failures
                  above: 0
                  window: 5m
                  severity: warning
            """
        )
    )
    (root / "syncs" / "to-hook.yaml").write_text(
        textwrap.dedent(
            """\
            source: web
            destination: hook
            event_types:
              - type: custom
                mappings:
                  required:
                    event: { field: event }
            """
        )
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("PD_ROUTING_KEY", ROUTING_KEY)


def run(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    for secret in (SLACK_TOKEN, ROUTING_KEY):
        assert secret not in result.stdout and secret not in result.stderr
    return result


def test_check_exits_1_only_while_a_critical_rule_fires_and_notifies_each_transition_once(
    tmp_path: Path, env: None
) -> None:
    with (
        FakeServer(lambda _r: Reply(200, "ok")) as slack,
        FakeServer() as hook,
        FakeServer(lambda _r: Reply(202, {"status": "success"})) as pager,
    ):
        write_project(tmp_path, slack.url, hook.url, pager.url)
        store = SqliteStore.open(tmp_path / "state.db", synchronous="NORMAL")
        traffic = Traffic(store, source="web", sync="to-hook", destination="hook")

        def attempts(count: int, ok: bool) -> None:
            traffic.attempt(traffic.receive(count, at=time.time()), ok=ok, at=time.time())

        def check() -> tuple[int, list[int]]:
            result = run("alerts", "check", "--project", str(tmp_path))
            heard = [len(slack.requests), len(hook.requests), len(pager.requests)]
            return result.exit_code, heard

        attempts(10, ok=True)
        assert check() == (0, [0, 0, 0])
        attempts(20, ok=False)  # 20 of 30 attempts failed
        assert check() == (1, [1, 1, 1])
        assert check() == (1, [1, 1, 1])  # still firing: nobody is told twice
        attempts(100, ok=True)  # 20 of 130: recovered
        assert check() == (0, [2, 2, 2])
        assert check() == (0, [2, 2, 2])
        store.close()

        assert [b["state"] for b in hook.bodies()] == ["firing", "resolved"]
        assert {r.headers["x-team"] for r in hook.requests} == {"data"}
        assert [r.path for r in slack.requests] == [f"/services/{SLACK_TOKEN}"] * 2
        assert [b["event_action"] for b in pager.bodies()] == ["trigger", "resolve"]
        assert {b["routing_key"] for b in pager.bodies()} == {ROUTING_KEY}

    listed = run("alerts", "list", "--project", str(tmp_path), "--json")
    assert listed.exit_code == 0, listed.stderr
    rules = {r["name"]: r for r in json.loads(listed.stdout)["rules"]}
    (critical,) = rules["hook errors"]["states"]
    assert (critical["sync"], critical["state"], critical["since"]) == ("to-hook", "ok", None)
    assert critical["notified_at"] is not None and critical["failed_channels"] == []
    assert (
        rules["hook errors"]["comparison"] == "above" and rules["hook errors"]["threshold"] == 0.2
    )
    (warning,) = rules["any failure"]["states"]
    assert warning["state"] == "firing" and warning["value"] == 20  # warnings never fail `check`


def test_check_reports_a_channel_that_failed_and_list_shows_it(tmp_path: Path, env: None) -> None:
    with (
        FakeServer(lambda _r: Reply(404, "no_service")) as slack,  # final: not retried
        FakeServer() as hook,
        FakeServer(lambda _r: Reply(400, {"status": "invalid event"})) as pager,
    ):
        write_project(tmp_path, slack.url, hook.url, pager.url)
        with SqliteStore.open(tmp_path / "state.db", synchronous="NORMAL") as store:
            traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
            traffic.attempt(traffic.receive(3, at=time.time()), ok=False, at=time.time())

        result = run("alerts", "check", "--project", str(tmp_path), "--json")

        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert report["critical_firing"] == 1
        (critical,) = [e for e in report["evaluations"] if e["rule"] == "hook errors"]
        outcomes = {n["channel"]: (n["ok"], n["error"]) for n in critical["notifications"]}
        assert outcomes == {
            "slack": (False, "slack channel 'slack': HTTP 404"),
            "hook": (True, None),
            "pager": (False, "pagerduty channel 'pager': HTTP 400"),
        }
        assert len(pager.requests) == 1  # a 400 is final: not retried
        assert "critical alert(s) firing" in result.stderr

    listed = run("alerts", "list", "--project", str(tmp_path))
    assert listed.exit_code == 0
    assert "hook errors" in listed.stdout and "firing" in listed.stdout
    assert "slack (failed)" in listed.stdout and "pager (failed)" in listed.stdout


def test_list_without_rules_says_so(tmp_path: Path) -> None:
    (tmp_path / "streamctl.yaml").write_text("version: 1\nstore: state.db\n")
    result = run("alerts", "list", "--project", str(tmp_path))
    assert result.exit_code == 0
    assert result.stdout == "" and "no alert rules" in result.stderr


def test_list_before_any_evaluation_shows_pending_and_creates_no_store(
    tmp_path: Path, env: None
) -> None:
    write_project(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")

    result = run("alerts", "list", "--project", str(tmp_path), "--json")

    assert result.exit_code == 0, result.stderr
    states = [s for rule in json.loads(result.stdout)["rules"] for s in rule["states"]]
    assert [(s["sync"], s["state"], s["value"]) for s in states] == [
        ("to-hook", "pending", None),
        ("to-hook", "pending", None),
    ]
    assert not (tmp_path / "state.db").exists()
