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
        guard.observe(60.0, 1.0)  # a gap of 4 s unsqueezed, inside the classic loop's 5 s
    assert guard.squeeze == 1.0  # 0.6 of 5 s is narrower than 4 s: no widening


def test_gaps_far_inside_the_classic_loop_s_are_widened_keeping_a_margin_at_most_twice() -> None:
    guard = LatencyGuard(Backoff())
    for _ in range(48):
        guard.observe(60.0, 2.5)  # half the classic loop's 5 s
    assert guard.squeeze == pytest.approx(0.6 * 5.0 / 2.5)
    # Gaps placed under the widening are 0.6 of the classic loop's: it holds, no creep.
    for _ in range(48):
        guard.observe(60.0, 3.0)
    assert guard.squeeze == pytest.approx(1.2)
    for _ in range(48):
        guard.observe(60.0, 0.5)  # a tenth: widened only twice
    assert guard.squeeze == 2.0


def test_runs_of_a_few_seconds_cost_fewer_polls_widened_and_stay_under_the_classic_p95() -> None:
    """Lognormal runs of 2.5 s: the learned gaps catch runs at about half the classic loop's
    latency; widened, they cost fewer polls and the p95 stays under the classic loop's (seed 1:
    0.65 of its polls at 0.55 of its p95 before, 0.57 at 0.74 after)."""
    result = race(lognormal(2.5, 0.5), seed=1, runs=1000)
    assert 0.65 * result.classic_p95 < result.learned_p95 <= 0.9 * result.classic_p95
    assert result.learned_polls < 0.6 * result.classic_polls


def test_runs_of_a_minute_are_seen_no_later_than_by_the_classic_loop() -> None:
    """The learned cap is a tenth of the median (6 s), the classic loop's 5 s: without the
    guard the p95 was 1.15 times the classic loop's on these runs."""
    result = race(lognormal(60.0, 0.6), seed=0, runs=400)
    assert result.learned_p95 <= result.classic_p95
    assert result.learned_polls < 0.8 * result.classic_polls
