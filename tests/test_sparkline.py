"""Sparklines for `streamctl status`: bars, squeezing long windows, trends from a real store."""

from __future__ import annotations

from pathlib import Path

from streamctl.monitoring.source import MinuteBucket
from streamctl.monitoring.sparkline import sparkline, squeeze, sync_trends
from streamctl.monitoring.store_metrics import StoreMetrics
from streamctl.store import Store
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
    with Store.open(tmp_path / "state.db", synchronous="NORMAL") as store:
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
