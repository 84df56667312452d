"""The non-parametric estimate of run times (``polling/completion_sketch.py``) and the comb
planned on it (``polling/comb.py``): deterministic, no clock."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from runfleet.bench.race import lognormal, race, uniform
from runfleet.polling.comb import cheapest_comb, classic_p95
from runfleet.polling.completion_sketch import CompletionSketch
from runfleet.polling.policy import PollPolicy
from runfleet.polling.schedule import Backoff


def bracketed(median: float, sigma: float, runs: int, seed: int) -> list[tuple[float, float]]:
    """Runs seen done by a poll 0.5 s after one that found them working."""
    rng = random.Random(seed)
    out = []
    for _ in range(runs):
        t = rng.lognormvariate(math.log(median), sigma)
        high = math.ceil(t / 0.5) * 0.5
        out.append((high - 0.5, high))
    return out


def test_nothing_is_estimated_before_ten_runs_were_seen_working() -> None:
    sketch = CompletionSketch(256)
    for _ in range(30):
        sketch.add(None, 3.0)  # found done at the first poll: says only "before 3 s"
    for low, high in bracketed(8.0, 0.3, 9, seed=1):
        sketch.add(low, high)
    assert sketch.points() is None
    sketch.add(7.5, 8.0)
    assert sketch.points() is not None


@pytest.mark.parametrize(("median", "sigma"), [(8.0, 0.3), (30.0, 0.6)])
def test_the_estimate_recovers_the_quantiles_of_bracketed_runs(median: float, sigma: float) -> None:
    sketch = CompletionSketch(256)
    for low, high in bracketed(median, sigma, 256, seed=2):
        sketch.add(low, high)
    points = sketch.points()
    assert points is not None
    assert points == sorted(points)
    for q, index in ((0.5, 64), (0.9, 115)):
        true = median * math.exp(sigma * 1.2816 * (q == 0.9))
        assert points[index] == pytest.approx(true, rel=0.12)


def test_a_mixture_keeps_both_modes() -> None:
    sketch = CompletionSketch(256)
    fast, slow = bracketed(4.0, 0.2, 180, seed=3), bracketed(40.0, 0.2, 76, seed=4)
    for low, high in sorted(fast + slow, key=lambda _: random.Random(5).random()):
        sketch.add(low, high)
    points = sketch.points()
    assert points is not None
    assert points[int(0.6 * 128)] < 6.0 < 30.0 < points[int(0.8 * 128)]  # nothing in between


def test_runs_found_done_at_the_first_poll_spread_evenly_from_0s_without_a_fit() -> None:
    sketch = CompletionSketch(256)
    for low, high in bracketed(10.0, 0.1, 200, seed=6):
        sketch.add(low, high)
    for _ in range(56):
        sketch.add(None, 8.0)
    points = sketch.points()
    assert points is not None
    early = [p for p in points if p < 8.0]
    assert len(early) == pytest.approx(28, abs=3)
    assert min(early) < 2.0  # the worst case for their latency, not just under the first poll


def narrow(t: float) -> float:
    """A fit's guess that every run takes 9.5-10 s: nothing done before 9.5 s."""
    return min(max((t - 9.5) / 0.5, 0.0), 1.0)


def sharp_edge(probes: int, seed: int) -> CompletionSketch:
    """Runs spread evenly over 4-12 s, polled first at 10 s, every eighth probed earlier."""
    sketch, rng = CompletionSketch(256), random.Random(seed)
    for i in range(256):
        t = rng.uniform(4.0, 12.0)
        probe = rng.uniform(4.0, 8.0) if i % 8 == 0 and i < 8 * probes else None
        if probe is not None and t <= probe:
            sketch.add(None, probe, probe)
        elif t <= 10.0:
            sketch.add(probe, 10.0, probe)
        else:
            sketch.add(10.0, 10.0 + 2.0 * math.ceil((t - 10.0) / 2.0), probe)
    return sketch


def test_probes_below_the_first_poll_show_a_lower_tail_the_fit_does_not_have() -> None:
    # 15 % of runs of 4-12 s are done by 5.2 s; the fit says none before 9.5 s.
    blind = sharp_edge(probes=0, seed=11).points(narrow, excess=0.0)
    seen = sharp_edge(probes=32, seed=11).points(narrow, excess=0.0)
    assert blind is not None
    assert seen is not None
    assert blind[int(0.15 * 128)] > 9.0  # the fit's guess
    assert seen[int(0.15 * 128)] < 6.5  # truly 5.2 s


def test_probes_that_find_runs_working_leave_the_fit_alone() -> None:
    # Runs that all take 8 s: probes at 4-7 s find every one working. A line from the last
    # of them to the first poll's point would put runs under 8 s, and the comb poll too early.
    def at_8s(probed: bool) -> list[float] | None:
        sketch, rng = CompletionSketch(256), random.Random(12)
        for i in range(256):
            probe = rng.uniform(4.0, 7.0) if probed and i % 8 == 0 else None
            if i % 4 == 0:
                sketch.add(7.9, 8.0, probe)
            else:
                sketch.add(probe, 8.0, probe) if probe is not None else sketch.add(None, 8.0)
        return sketch.points(lambda t: 1.0 if t >= 7.9 else 0.0, excess=0.0)

    assert at_8s(probed=True) == at_8s(probed=False)


def test_a_doubled_median_is_detected_and_older_runs_are_forgotten() -> None:
    sketch = CompletionSketch(256)
    for low, high in bracketed(4.0, 0.3, 256, seed=7):
        assert not sketch.add(low, high)
        sketch.points()
    changed_after = None
    for i, (low, high) in enumerate(bracketed(8.0, 0.3, 100, seed=8)):
        if sketch.add(low, high):
            changed_after = i + 1
            break
    assert changed_after is not None
    assert changed_after <= 45
    assert len(sketch.samples) == 32
    points = sketch.points()
    # The latest 32 still hold some runs of before the change; the median has moved most of
    # the way, where the 256 it had would have kept it near 4 s.
    assert points is not None
    assert points[64] > 1.4 * 4.0


def test_a_cohort_ending_fastest_first_is_no_change_when_not_watched() -> None:
    # A hundred runs started together end in order of their times: every one after the
    # median's is above it, which the sign test would read as runs getting slower.
    cohort = sorted(bracketed(4.0, 0.3, 200, seed=10), key=lambda interval: interval[1])
    watched, unwatched = CompletionSketch(256), CompletionSketch(256)
    changes = 0
    for low, high in cohort:
        changes += watched.add(low, high)
        watched.points()
        assert not unwatched.add(low, high, watch=False)
        unwatched.points()
    assert changes > 0
    assert len(unwatched.samples) == 200


def test_runs_still_working_count_as_longer_than_their_age() -> None:
    # The 31 fastest of 100 runs (lognormal 8 s) are seen done by 7 s; 69 still work.
    cohort = sorted(bracketed(8.0, 0.3, 100, seed=14), key=lambda interval: interval[1])
    blind, told = CompletionSketch(256), CompletionSketch(256)
    for low, high in cohort[:31]:
        blind.add(low, high, watch=False)
        told.add(low, high, watch=False)
    alone = blind.points()
    with_cohort = told.points(working=([cohort[30][1]] * 69, 1.0))
    assert alone is not None
    assert with_cohort is not None
    assert alone[64] < cohort[30][1]  # the median of the fastest 31
    assert with_cohort[64] >= cohort[30][1] / 1.08  # where they work, within one bin (8 %)


def test_runs_still_working_past_every_run_seen_are_spread_as_the_fit_guesses() -> None:
    # As above; nothing says how much longer than 7 s the 69 take, so ``beyond`` (here the
    # true lognormal, given longer than 7 s) places them: the 90 % point near the true one
    # (11.7 s), not at the age they were seen working (which made the first wave's comb
    # plan a gap of a tenth of the runs' median).
    cohort = sorted(bracketed(8.0, 0.3, 100, seed=14), key=lambda interval: interval[1])
    sketch = CompletionSketch(256)
    for low, high in cohort[:31]:
        sketch.add(low, high, watch=False)
    normal = statistics.NormalDist(math.log(8.0), 0.3)

    def beyond(top: float, u: float) -> float:
        done = normal.cdf(math.log(top))
        return math.exp(normal.inv_cdf(done + u * (1 - done)))

    points = sketch.points(working=([cohort[30][1]] * 69, 1.0), beyond=beyond)
    assert points is not None
    assert points == sorted(points)
    assert abs(points[115] / math.exp(normal.inv_cdf(0.9)) - 1) < 0.1
    assert points[-1] > 2 * cohort[30][1]  # the slowest past where the bins end


def test_steady_runs_are_not_taken_for_a_change() -> None:
    sketch = CompletionSketch(256)
    for low, high in bracketed(6.0, 0.6, 1000, seed=9):
        assert not sketch.add(low, high)
        sketch.points()


def test_the_classic_loops_p95_on_long_runs_is_under_its_cap() -> None:
    # Runs of minutes are polled every 4-5 s (5 s, +-20 %, cut to 5 s).
    assert 4.4 < classic_p95([100.0 + i for i in range(128)], Backoff()) < 5.0


def test_runs_that_all_take_8s_are_polled_once_at_8s() -> None:
    start, gap = cheapest_comb([8.0] * 128, latency=4.0, jitter=0.2, least_gap=0.05, most_early=1)
    assert start == 8.0
    assert gap <= 4.0 / 0.8


def test_the_comb_keeps_the_p95_latency_it_is_given() -> None:
    rng = random.Random(10)
    points = sorted(rng.lognormvariate(math.log(8.0), 0.5) for _ in range(128))
    start, gap = cheapest_comb(points, latency=3.0, jitter=0.0, least_gap=0.05, most_early=1)
    waits = sorted(
        (start - t) if t <= start else gap * math.ceil((t - start) / gap) - (t - start)
        for t in points
    )
    assert waits[int(0.95 * 128) - 1] <= 3.0 + 1e-9
    assert start > points[6]  # it does not poll from the first run on


@pytest.mark.soak  # 3-6 s each on 2 loaded cores: `make soak`
@pytest.mark.parametrize("draw", [lognormal(8.0, 0.5), lognormal(30.0, 0.3)], ids=["8s", "30s"])
def test_comb_polls_half_the_classic_loops_at_no_worse_p95(draw: object) -> None:
    result = race(draw, 0, 500, PollPolicy(comb=True))  # type: ignore[arg-type]
    assert result.learned_polls <= 0.5 * result.classic_polls, result
    assert result.learned_p95 <= result.classic_p95, result


@pytest.mark.soak  # 11 s on 2 loaded cores: `make soak`
def test_comb_on_a_sharp_lower_edge_sees_it_through_its_probes() -> None:
    """Without probes the comb's p95 here was 1.28 times the classic loop's (seed 0)."""
    result = race(uniform(4.0, 12.0), 0, 1000, PollPolicy(comb=True))
    assert result.learned_p95 <= result.classic_p95, result
