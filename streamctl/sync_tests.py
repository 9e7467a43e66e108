"""Sync unit tests: the YAML fixtures under a project's `tests/` that `streamctl test` runs.

    # tests/orders.yaml
    sync: orders-to-hook                 # the sync every test of the file runs
    tests:
      - name: an order becomes a custom event
        given: { type: track, event: Order Completed, userId: u1,
                 properties: { order_id: o1, total: 9.5 } }
        expect:
          event_type: custom             # outcome: delivered is the default
          payload_includes: { total: 9.5 }
      - name: pings are dropped by the function
        given: { type: track, event: Internal Ping, userId: u1 }
        expect: { outcome: dropped }

    tests = load_sync_tests(project)           # raises ConfigError with file:line problems
    results = [run_sync_test(project, t) for t in tests]

Events are prepared as `streamctl.testing` does (messageId `test-N`, receivedAt
2024-01-01T00:00:00.000Z unless `received_at` says otherwise), so payloads that
carry timestamps or ids are reproducible. The format's JSON Schema is
`streamctl/config/schemas/tests.schema.json`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamctl.config.documents import Document, parse_document
from streamctl.config.schema import check_structure, is_clean
from streamctl.core.errors import ConfigError, EventError, Problem, StreamctlError, suggest
from streamctl.core.model import Project
from streamctl.core.outcomes import Decision, Status
from streamctl.core.timestamps import parse_iso
from streamctl.testing import RECEIVED_AT, run_sync

TESTS_FOLDER = "tests"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Expectation:
    outcome: str = "delivered"
    event_type: str | None = None
    payload: dict[str, Any] | None = None
    payload_includes: dict[str, Any] | None = None
    error: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class SyncTest:
    name: str
    path: str  # relative to the project root
    line: int
    sync: str
    given: tuple[dict[str, Any], ...]
    expect: tuple[Expectation, ...]
    each: bool  # one expectation every decision must meet (else one per decision)
    received_at: str | None = None

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class TestResult:
    test: SyncTest
    failures: tuple[str, ...] = ()
    diff: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def load_sync_tests(project: Project, env: Mapping[str, str] | None = None) -> list[SyncTest]:
    """Every test of `tests/*.yaml`, in file order; raises ConfigError listing every problem."""
    folder = project.root / TESTS_FOLDER
    if not folder.is_dir():
        return []
    problems: list[Problem] = []
    tests: list[SyncTest] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()):
        relative = f"{TESTS_FOLDER}/{path.name}"
        doc = parse_document(
            path.read_text(encoding="utf-8"), relative, os.environ if env is None else env
        )
        problems.extend(doc.problems)
        if doc.data is None:
            continue
        structural, broken = check_structure(doc, "tests")
        problems.extend(structural)
        tests.extend(_tests_of(doc, broken, project, problems))
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems)
    return tests


def run_sync_test(project: Project, test: SyncTest) -> TestResult:
    """Run one test's events through its sync and compare every decision with the expectation."""
    moment = parse_iso(test.received_at) if test.received_at else RECEIVED_AT
    try:
        decisions = run_sync(project, test.sync, test.given, received_at=moment)
    except EventError as exc:
        return TestResult(test, (f"the given event is refused at ingest: {exc}",))
    except StreamctlError as exc:
        return TestResult(test, (f"{type(exc).__name__}: {exc}",))
    return _compare(test, decisions)


def outcome_of(decision: Decision) -> str:
    """The fixture word for a decision's status: `delivered` for one that would be sent."""
    return "delivered" if decision.status is Status.PENDING else decision.status.value


# -- loading ---------------------------------------------------------------------------


def _tests_of(
    doc: Document, broken: set[Any], project: Project, problems: list[Problem]
) -> list[SyncTest]:
    data = doc.data if isinstance(doc.data, dict) else {}
    entries = data.get("tests")
    if not isinstance(entries, list):
        return []
    known_syncs = [s.name for s in project.syncs]
    default_sync = data.get("sync")
    seen: dict[str, int] = {}
    tests = []
    for index, entry in enumerate(entries):
        path = ("tests", index)
        if not is_clean(path, broken) or not isinstance(entry, dict):
            continue
        line = doc.position(path)[0]
        name = entry["name"]
        if name in seen:
            problems.append(
                doc.problem(
                    (*path, "name"), f"duplicate test name {name!r} (first on line {seen[name]})"
                )
            )
            continue
        seen[name] = line
        sync = entry.get("sync", default_sync)
        if sync is None:
            problems.append(
                doc.problem(
                    path, f"test {name!r} names no sync (set `sync:` on the test or the file)"
                )
            )
            continue
        if sync not in known_syncs:
            where = (*path, "sync") if "sync" in entry else ("sync",)
            problems.append(
                doc.problem(where, f"unknown sync {sync!r}{suggest(sync, known_syncs)}")
            )
            continue
        received_at = entry.get("received_at")
        if received_at is not None and parse_iso(received_at) is None:
            problems.append(
                doc.problem((*path, "received_at"), f"not an ISO 8601 timestamp: {received_at!r}")
            )
            continue
        given = entry["given"]
        expect = entry["expect"]
        tests.append(
            SyncTest(
                name=name,
                path=doc.path,
                line=line,
                sync=sync,
                given=tuple(given if isinstance(given, list) else [given]),
                expect=tuple(
                    _expectation(e) for e in (expect if isinstance(expect, list) else [expect])
                ),
                each=not isinstance(expect, list),
                received_at=received_at,
            )
        )
    return tests


def _expectation(spec: Mapping[str, Any]) -> Expectation:
    return Expectation(
        outcome=spec.get("outcome", "delivered"),
        event_type=spec.get("event_type"),
        payload=spec.get("payload"),
        payload_includes=spec.get("payload_includes"),
        error=spec.get("error"),
        message_id=spec.get("message_id"),
    )


# -- comparing -------------------------------------------------------------------------


def _compare(test: SyncTest, decisions: Sequence[Decision]) -> TestResult:
    if not test.each and len(test.expect) != len(decisions):
        got = ", ".join(_describe(d) for d in decisions) or "none"
        return TestResult(
            test, (f"expected {len(test.expect)} decisions, got {len(decisions)}: {got}",)
        )
    pairs = zip(test.expect * len(decisions) if test.each else test.expect, decisions, strict=False)
    failures: list[str] = []
    diffs: list[str] = []
    for number, (expected, decision) in enumerate(pairs, start=1):
        prefix = f"decision {number} ({decision.message_id}): " if len(decisions) > 1 else ""
        problems, diff = _check(expected, decision)
        failures.extend(prefix + p for p in problems)
        if diff:
            diffs.append(diff)
    return TestResult(test, tuple(failures), "\n".join(diffs))


def _check(expected: Expectation, decision: Decision) -> tuple[list[str], str]:
    failures = []
    actual = outcome_of(decision)
    if actual != expected.outcome:
        because = f": {decision.error}" if decision.error else ""
        failures.append(f"expected {expected.outcome}, got {actual}{because}")
    if expected.event_type is not None and decision.event_type != expected.event_type:
        failures.append(f"expected event type {expected.event_type!r}, got {decision.event_type!r}")
    if expected.message_id is not None and decision.message_id != expected.message_id:
        failures.append(f"expected messageId {expected.message_id!r}, got {decision.message_id!r}")
    if expected.error is not None and expected.error not in (decision.error or ""):
        failures.append(f"expected an error containing {expected.error!r}, got {decision.error!r}")
    diff = ""
    if expected.payload is not None and not json_equal(decision.payload, expected.payload):
        failures.append("the payload differs from the expected one")
        diff = _diff(expected.payload, decision.payload)
    if expected.payload_includes is not None and not json_includes(
        decision.payload, expected.payload_includes
    ):
        failures.append("the payload does not include the expected fields")
        diff = _diff(
            expected.payload_includes, _projection(decision.payload, expected.payload_includes)
        )
    return failures, diff


def json_equal(actual: Any, expected: Any) -> bool:
    """JSON equality: 1 equals 1.0, but true is not 1 and "1" is not 1."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(json_equal(actual[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(json_equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if _is_number(actual) or _is_number(expected):
        return _is_number(actual) and _is_number(expected) and actual == expected
    return bool(actual == expected)


def json_includes(actual: Any, expected: Any) -> bool:
    """`expected`'s keys, nested freely, are in `actual` with equal values; lists match item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and json_includes(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(json_includes(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return json_equal(actual, expected)


def _projection(actual: Any, expected: Any) -> Any:
    """`actual` narrowed to the keys `expected` names, so a diff shows only what matters."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: _projection(actual[k], v) for k, v in expected.items() if k in actual}
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        return [_projection(a, e) for a, e in zip(actual, expected, strict=True)]
    return actual


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _diff(expected: Any, actual: Any) -> str:
    def lines(value: Any) -> list[str]:
        return (
            orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            .decode()
            .splitlines()
        )

    return "\n".join(
        difflib.unified_diff(lines(expected), lines(actual), "expected", "actual", lineterm="")
    )


def _describe(decision: Decision) -> str:
    kind = f" {decision.event_type}" if decision.event_type else ""
    return f"{outcome_of(decision)}{kind}"
