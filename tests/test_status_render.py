"""`streamctl status` stays readable in a narrow terminal: sync names whole, numbers whole."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.cli.status import status_table
from streamctl.store import SqliteStore
from streamctl.store.queries import empty_status
from tests.fakes.traffic import Traffic
from tests.test_top import PROJECT, SYNC

NAMES = ("purchases-to-braze-eu", "signups-to-amplitude", "orders-to-warehouse-hook")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "streamctl.yaml").write_text(PROJECT)
    (tmp_path / "syncs").mkdir()
    for name in NAMES:
        (tmp_path / "syncs" / f"{name}.yaml").write_text(SYNC)  # named after the file
    now = time.time()
    with SqliteStore.open(tmp_path / "state.db", synchronous="NORMAL") as store:
        for index, name in enumerate(NAMES):
            traffic = Traffic(store, source="web", sync=name, destination="hook")
            received = traffic.receive(1200 * (index + 1), at=now - 90)
            traffic.attempt(received, ok=index != 1, at=now - 60)
    return tmp_path


def status(project: Path, columns: int, *args: str):
    result = CliRunner().invoke(
        app, ["status", "--project", str(project), *args], env={"COLUMNS": str(columns)}
    )
    assert result.exit_code == 0, result.stderr
    return result


def test_at_80_columns_every_sync_name_and_number_is_whole(project: Path) -> None:
    table = status(project, 80, "--since", "10m").stdout
    rows = {row["sync"]: row for row in json.loads(status(project, 80, "--json").stdout)["syncs"]}

    assert max(len(line) for line in table.splitlines()) <= 80
    for name in NAMES:
        # The first line naming it is its funnel row (the second, its sparklines).
        line = next(line for line in table.splitlines() if f"│ {name} " in line)
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        assert cells[0] == name
        assert f"{rows[name]['received']:,}" in cells  # 1,200 / 2,400 / 3,600, never cut
    # The sparklines moved under the table, still one per sync, volume above errors.
    assert "volume/min" in table and "errors/min" in table
    assert table.index("trends") > table.index(NAMES[-1])
    assert "hidden at this width (see --json)" in table


def test_a_wide_terminal_keeps_every_column_and_the_sparklines_in_the_row(project: Path) -> None:
    table = status(project, 250, "--since", "10m").stdout
    assert "hidden at this width" not in table and "trends" not in table
    header = next(line for line in table.splitlines() if "received" in line)
    for column in ("blocked", "dropped", "filtered", "mapping errors", "p50 ms", "p99 ms"):
        assert column in header
    assert "volume/min" in header and "errors/min" in header


@pytest.mark.parametrize("width", [80, 100, 120, 160, 250])
def test_each_width_draws_names_whole_and_within_the_width(width: int) -> None:
    rows = []
    for name in NAMES:
        row = empty_status(name)
        row.update(received=123_456, delivered=120_000, attempts=3, error_rate=1 / 3)
        row["latency_ms"] = {"p50": 12.5, "p95": 250.0, "p99": 1234.5}
        rows.append(row)
    out = io.StringIO()
    Console(file=out, width=width).print(status_table(rows, width=width))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    for name in NAMES:
        assert any(f"│ {name} " in line for line in lines), name
    assert any("123,456" in line for line in lines)
