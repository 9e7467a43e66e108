"""`streamctl validate` over a corpus of broken projects, one kind of mistake each.

Each folder of tests/data/broken holds a project and `expected.txt`: the exact
`path:line:col: message` lines validate must print (a line ending in `...` matches
by prefix, for messages worded by the filter, mapping, contract and function modules).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.destinations.registry import CATALOG
from tests.fakes.acme import AcmeDestination

CORPUS = Path(__file__).parent / "data" / "broken"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


@pytest.fixture(autouse=True)
def acme(monkeypatch):
    monkeypatch.setitem(CATALOG, "acme", AcmeDestination)
    monkeypatch.delenv("WEB_WRITE_KEY", raising=False)  # missing-env-var needs it unset


def expected_lines(case: str) -> list[str]:
    return (CORPUS / case / "expected.txt").read_text().splitlines()


def assert_lines_match(actual: list[str], expected: list[str]) -> None:
    assert len(actual) == len(expected), "\n".join(actual)
    for got, want in zip(actual, expected, strict=True):
        if want.endswith("..."):
            assert got.startswith(want[:-3]), got
        else:
            assert got == want


def test_the_corpus_covers_many_kinds_of_mistake():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES)
def test_validate_prints_each_mistake_at_its_line_and_column(case):
    result = CliRunner().invoke(app, ["validate", "--project", str(CORPUS / case)], env={})
    expected = expected_lines(case)
    problem_lines, summary = result.stderr.splitlines()[:-1], result.stderr.splitlines()[-1]
    assert_lines_match(problem_lines, expected)
    has_error = any(": warning: " not in line for line in expected)
    assert result.exit_code == (1 if has_error else 0)
    assert result.stdout == ""
    assert "error" in summary


@pytest.mark.parametrize("case", CASES)
def test_json_format_reports_the_same_problems(case):
    result = CliRunner().invoke(
        app, ["validate", "--project", str(CORPUS / case), "--format", "json"], env={}
    )
    problems = json.loads(result.stdout)
    expected = expected_lines(case)
    assert len(problems) == len(expected)
    for problem, line in zip(problems, expected, strict=True):
        assert set(problem) == {"path", "line", "column", "message", "severity"}
        location = f"{problem['path']}:{problem['line']}:{problem['column']}: "
        assert line.startswith(location)
        assert problem["severity"] == ("warning" if ": warning: " in line else "error")
    assert result.stderr == ""


@pytest.mark.parametrize("case", ["no-catch-all", "unused-source"])
def test_warnings_fail_only_with_strict(case):
    project = str(CORPUS / case)
    assert CliRunner().invoke(app, ["validate", "--project", project], env={}).exit_code == 0
    strict = CliRunner().invoke(app, ["validate", "--project", project, "--strict"], env={})
    assert strict.exit_code == 1
    assert ": warning: " in strict.stderr
