"""The fleet's figures: the exact busiest minute and second, with literal times."""

from __future__ import annotations

import random

import pytest

from runfleet.stats import StatsCollector, quantile


def test_the_peaks_are_the_busiest_60_s_and_1_s_windows() -> None:
    stats = StatsCollector()
    for t in (0.0, 10.0, 59.9, 60.0, 61.0, 130.0):
        stats.request_started("retrieve", t)
    snap = stats.snapshot(200.0, {}, None)
    assert snap.requests_last_minute == 0  # long past: the peak is kept anyway
    assert snap.peak_minute == 4  # 10, 59.9, 60 and 61 fall within (1, 61]
    assert snap.peak_second == 2  # 59.9 and 60


def test_the_peaks_match_a_count_over_every_window() -> None:
    rng = random.Random(3)
    times, t = [], 0.0
    for _ in range(600):
        t += rng.expovariate(20.0) if rng.random() < 0.9 else rng.uniform(0, 30)
        times.append(round(t, 3))
    stats = StatsCollector()
    for t in times:
        stats.request_started("create", t)
    snap = stats.snapshot(times[-1], {}, None)

    def busiest(span: float) -> int:
        return max(sum(1 for s in times if end - span < s <= end) for end in times)

    assert snap.peak_minute == busiest(60.0)
    assert snap.peak_second == busiest(1.0)


def test_what_the_collector_keeps_stays_bounded_however_long_the_fleet_runs() -> None:
    """A soak's worth of requests, runs and heartbeats: the windows and samples stop growing."""
    stats = StatsCollector()
    for i in range(100_000):  # 100 requests a second for 1,000 s
        stats.request_started("retrieve", i / 100)
    for i in range(25_000):
        stats.run_finished("completed", float(i))
    for _ in range(5_000):
        stats.loop_lagged(0.01)
    assert len(stats.recent) <= 60 * 100 + 1  # the last minute only
    assert len(stats.this_second) <= 100 + 1
    assert len(stats.latencies) == 10_000  # the latest runs' latencies
    assert len(stats.lags) == 1_200
    assert stats.snapshot(1_000.0, {}, None).detection_p50 == pytest.approx(19_999.5)


def test_the_one_quantile_interpolates_or_takes_the_rank_at_or_above() -> None:
    values = [float(v) for v in range(100, 4_100, 100)]
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5, upper=True) == 2.0
    assert quantile(values, 0.99) == pytest.approx(3_961.0)
    assert quantile(values, 0.99, upper=True) == 4_000.0  # a value seen, never below it
    assert quantile([7.0], 0.0, upper=True) == quantile([7.0], 1.0) == 7.0
