"""`streamctl alerts list|check`: alert rules, their state, one evaluation for cron and CI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamctl.channels import format_value
from streamctl.cli.options import ProjectOption, json_flag
from streamctl.cli.output import stderr, table_console
from streamctl.config.loader import load_project
from streamctl.core.model import Project
from streamctl.core.timestamps import iso
from streamctl.core.units import format_duration
from streamctl.monitoring.alerts import (
    Evaluation,
    RuleStatus,
    bounds,
    check_once,
    rule_json,
    rule_statuses,
)
from streamctl.store.backend import open_alert_state, store_exists

app = typer.Typer(
    help="Alert rules (streamctl.yaml `alerts:`) and their state.", no_args_is_help=True
)

JsonOption = Annotated[bool, json_flag("JSON on stdout instead of a table.")]


@app.command("list")
def list_alerts(project: ProjectOption = Path("."), as_json: JsonOption = False) -> None:
    """Every rule, per matching sync: firing or ok, its last value, since when, failed channels.

    Shows the state the last evaluation left (by `streamctl run` or `alerts check`);
    evaluates nothing.
    """
    loaded = load_project(project)
    if not store_exists(loaded):  # listing never creates the store
        statuses = rule_statuses(loaded, None)
    else:
        store = open_alert_state(loaded)
        try:
            statuses = rule_statuses(loaded, store)
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(_list_json(loaded, statuses), indent=2))
        return
    if not loaded.alerts.rules:
        stderr.print("no alert rules: add them under `alerts:` in streamctl.yaml", markup=False)
        return
    table_console().print(_list_table(statuses))


@app.command("check")
def check(project: ProjectOption = Path("."), as_json: JsonOption = False) -> None:
    """Evaluate every rule once and notify channels of what started firing or recovered.

    Exits 1 while any critical rule fires, 0 otherwise: run it from cron or CI. The
    state is shared with `streamctl run`, so a transition is announced only once.
    """
    loaded = load_project(project)
    evaluations = asyncio.run(check_once(loaded))
    if as_json:
        typer.echo(json.dumps(_check_json(evaluations), indent=2))
    else:
        if evaluations:
            table_console().print(_check_table(evaluations))
        _report_notifications(evaluations)
    firing = [e for e in evaluations if e.critical_firing]
    if firing:
        stderr.print(f"{len(firing)} critical alert(s) firing", markup=False, highlight=False)
        raise typer.Exit(1)


def _value(when: str, value: float | None) -> str:
    return "no data" if value is None else format_value(when, value)


def _threshold(status_rule: RuleStatus | Evaluation) -> str:
    comparison, threshold = bounds(status_rule.rule)
    return f"{comparison} {format_value(status_rule.rule.when, threshold)}"


def _list_table(statuses: Sequence[RuleStatus]) -> Table:
    table = Table("rule", "sync", "when", "threshold", "window", "severity", "state", "value",
                  "since", "notify", box=None, header_style="bold")  # fmt: skip
    for status in statuses:
        rule, state = status.rule, status.state
        label = {"firing": "[red]firing[/]", "ok": "[green]ok[/]", "pending": "[dim]pending[/]"}
        notify = ", ".join(
            f"{c} [red](failed)[/]" if c in status.failed_channels else c for c in rule.notify
        )
        table.add_row(
            rule.name,
            status.sync,
            rule.when,
            _threshold(status),
            format_duration(rule.window),
            rule.severity,
            label[status.label],
            "" if state is None else _value(rule.when, state.value),
            iso(state.since, "seconds") if state is not None and state.since is not None else "",
            notify,
        )
    return table


def _list_json(project: Project, statuses: Sequence[RuleStatus]) -> dict[str, object]:
    rules = []
    for rule in project.alerts.rules:
        states = []
        for status in (s for s in statuses if s.rule is rule):
            state = status.state
            states.append(
                {
                    "sync": status.sync,
                    "state": status.label,
                    "value": None if state is None else state.value,
                    "since": _iso_or_none(state.since if state else None),
                    "evaluated_at": _iso_or_none(state.evaluated_at if state else None),
                    "notified_at": _iso_or_none(state.notified_at if state else None),
                    "failed_channels": list(status.failed_channels),
                }
            )
        rules.append({**rule_json(rule), "states": states})
    return {"rules": rules}


def _check_table(evaluations: Sequence[Evaluation]) -> Table:
    table = Table("rule", "sync", "severity", "state", "value", "threshold", "change",
                  box=None, header_style="bold")  # fmt: skip
    for e in evaluations:
        state = "[red]firing[/]" if e.firing else "[green]ok[/]"
        table.add_row(e.rule.name, e.sync, e.rule.severity, state, _value(e.rule.when, e.value),
                      _threshold(e), e.transition or "")  # fmt: skip
    return table


def _check_json(evaluations: Sequence[Evaluation]) -> dict[str, object]:
    return {
        "firing": sum(1 for e in evaluations if e.firing),
        "critical_firing": sum(1 for e in evaluations if e.critical_firing),
        "evaluations": [
            {
                "rule": e.rule.name,
                "sync": e.sync,
                "when": e.rule.when,
                "severity": e.rule.severity,
                "state": "firing" if e.firing else "ok",
                "value": e.value,
                "since": _iso_or_none(e.since),
                "transition": e.transition,
                "notifications": [
                    {"channel": n.channel, "ok": n.ok, "attempts": n.attempts, "error": n.error}
                    for n in e.notifications
                ],
            }
            for e in evaluations
        ],
    }


def _report_notifications(evaluations: Sequence[Evaluation]) -> None:
    for e in evaluations:
        for n in e.notifications:
            outcome = (
                "notified" if n.ok else f"NOT notified after {n.attempts} attempt(s): {n.error}"
            )
            stderr.print(f"{e.rule.name} / {e.sync} {n.state}: {n.channel} {outcome}",
                         markup=False, highlight=False)  # fmt: skip


def _iso_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else iso(epoch, "seconds")
