"""The p95 guard: learned gaps narrowed while they catch runs later than the classic loop."""

from __future__ import annotations

import pytest

from runfleet.bench.race import lognormal, race
from runfleet.polling.latency_guard import LatencyGuard, classic_gap
from runfleet.polling.schedule import Backoff


@pytest.mark.parametrize(("age", "gap"), [(0.3, 0.5), (0.6, 0.75), (1.3, 1.125), (100.0, 5.0)])
def test_the_classic_gap_around_an_age(age: float, gap: float) -> None:
    """Polls at 0.5, 1.25, 2.375 ... then every 5 s: the gap that holds ``age``."""
    assert classic_gap(Backoff(), age) == pytest.approx(gap)


def test_gaps_wider_than_the_classic_loop_s_are_narrowed_to_it() -> None:
    guard = LatencyGuard(Backoff())
    for _ in range(15):
        guard.observe(60.0, 8.0)
    assert guard.squeeze == 1.0  # too few to judge
    guard.observe(60.0, 8.0)
    assert guard.squeeze == pytest.approx(5.0 / 8.0)
    # Gaps placed under the squeeze are as wide as the classic loop's: it holds, no overshoot.
    for _ in range(48):
        guard.observe(60.0, 5.0)
    assert guard.squeeze == pytest.approx(5.0 / 8.0)


def test_the_squeeze_relaxes_when_runs_get_shorter_and_never_falls_under_a_quarter() -> None:
    guard = LatencyGuard(Backoff())
    for _ in range(48):
        guard.observe(60.0, 100.0)
    assert guard.squeeze == 0.25
    for _ in range(48):
        guard.observe(60.0, 0.25)  # a gap of 1 s unsqueezed, inside the classic loop's 5 s
    assert guard.squeeze == 1.0


def test_runs_of_a_minute_are_seen_no_later_than_by_the_classic_loop() -> None:
    """The learned cap is a tenth of the median (6 s), the classic loop's 5 s: without the
    guard the p95 was 1.15 times the classic loop's on these runs."""
    result = race(lognormal(60.0, 0.6), seed=0, runs=400)
    assert result.learned_p95 <= result.classic_p95
    assert result.learned_polls < 0.8 * result.classic_polls
