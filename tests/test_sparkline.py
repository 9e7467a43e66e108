"""Sparklines for `streamctl status`: bars, squeezing long windows, trends from a real store."""

from __future__ import annotations

from pathlib import Path

from streamctl.monitoring.sparkline import sparkline, squeeze, sync_trends
from streamctl.store import SqliteStore
from streamctl.store.metrics import MinuteBucket, StoreMetrics
from tests.fakes.traffic import Traffic

T0 = 1_800_000_000.0  # a minute boundary


def test_bars_scale_to_the_largest_value_and_keep_small_ones_visible() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == "▁▂▃▅█"
    assert sparkline([0, 1, 1000]) == "▁▂█"  # one error next to a thousand is still seen
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([]) == ""


def test_long_windows_are_summed_into_at_most_max_width_points() -> None:
    minutes = [MinuteBucket(T0 + 60 * i, volume=i, errors=1) for i in range(10)]
    points = squeeze(minutes, 4)
    assert [(p.start, p.volume, p.errors) for p in points] == [
        (T0, 0 + 1 + 2, 3),
        (T0 + 180, 3 + 4 + 5, 3),
        (T0 + 360, 6 + 7 + 8, 3),
        (T0 + 540, 9, 1),
    ]
    assert squeeze(minutes, 10) == minutes


def test_trends_of_a_sync_from_the_store(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "state.db", synchronous="NORMAL") as store:
        traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
        for minute, (count, failing) in enumerate([(2, False), (0, False), (8, True), (4, False)]):
            at = T0 + 60 * minute + 1
            if count:
                traffic.attempt(traffic.receive(count, at=at), ok=not failing, at=at)

        trends = sync_trends(StoreMetrics(store), ["to-hook"], since=T0, until=T0 + 240)

    trend = trends["to-hook"]
    assert trend.volume == "▃▁█▅"
    assert trend.errors == "▁▁█▁"
    assert trend.as_json()["volume"] == [2, 0, 8, 4]
    assert trend.as_json()["errors"] == [0, 0, 8, 0]
    assert trend.minutes_per_char == 1


def test_status_shows_volume_and_error_sparklines_of_its_window(tmp_path: Path) -> None:
    import json
    import time

    from typer.testing import CliRunner

    from streamctl.cli.main import app
    from tests.test_top import PROJECT, SYNC

    (tmp_path / "streamctl.yaml").write_text(PROJECT)
    (tmp_path / "syncs").mkdir()
    (tmp_path / "syncs" / "to-hook.yaml").write_text(SYNC)
    now = time.time()
    with SqliteStore.open(tmp_path / "state.db", synchronous="NORMAL") as store:
        traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
        traffic.attempt(traffic.receive(6, at=now - 150), ok=False, at=now - 150)  # 2.5 minutes ago
        traffic.attempt(traffic.receive(3, at=now - 1), ok=True, at=now - 1)  # now

    runner = CliRunner()
    table = runner.invoke(
        app, ["status", "--project", str(tmp_path), "--since", "5m"], env={"COLUMNS": "250"}
    )
    data = runner.invoke(app, ["status", "--project", str(tmp_path), "--since", "5m", "--json"])

    assert table.exit_code == 0, table.stderr
    assert "volume/min" in table.stdout and "errors/min" in table.stdout
    (trend,) = [row["trend"] for row in json.loads(data.stdout)["syncs"]]
    assert trend["minutes_per_point"] == 1 and len(trend["volume"]) in (5, 6)
    assert sum(trend["volume"]) == 9 and sum(trend["errors"]) == 6
    assert trend["volume"][-1] == 3 and trend["errors"][-1] == 0
    assert trend["volume_sparkline"] in table.stdout and trend["errors_sparkline"] in table.stdout
    assert trend["errors_sparkline"].count("█") == 1
