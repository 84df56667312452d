"""The runs still working of a cohort: what they add to the run times seen done."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from runfleet.polling.interval_fit import IntervalFit
from runfleet.polling.learning import RunTimes
from runfleet.polling.survival import WorkingRuns, with_working
from runfleet.stats import quantile

KEY = ("responses", "gpt-test")


def cohort(seed: int = 3, runs: int = 100) -> list[float]:
    """Run times of a cohort started together: median 4.5 s, sigma 0.3."""
    rng = random.Random(seed)
    return sorted(rng.lognormvariate(math.log(4.5), 0.3) for _ in range(runs))


def test_without_runs_working_the_times_seen_done_are_the_estimate() -> None:
    done = [1.0, 2.0, 2.0, 5.0]
    assert with_working(done, [], 1.0) == (done, 1.0)


def test_a_cohorts_runs_still_working_move_its_median_to_theirs() -> None:
    times = cohort()
    now = times[59]  # sixty of a hundred done: the median is among the done ones
    done, working = times[:60], [now] * 40
    values, seen = with_working(done, working, 1.0)
    assert seen == pytest.approx(0.6)
    assert quantile(done, 0.5) < 0.9 * quantile(times, 0.5)  # the fastest alone lean short
    assert quantile(values, 0.5) == pytest.approx(quantile(times, 0.5), rel=0.05)
    # Those working past every run seen done count at the least they take.
    assert max(values) == pytest.approx(now)


def test_a_sample_of_runs_working_stands_for_all_of_them() -> None:
    times = cohort(runs=1000)
    now = times[599]
    whole, _ = with_working(times[:600], [now] * 400, 1.0)
    sampled, seen = with_working(times[:600], [now] * 100, 4.0)
    assert seen == pytest.approx(0.6)
    assert sampled == whole


def test_the_fit_counts_runs_still_working_as_at_least_their_age() -> None:
    times = cohort(runs=400)
    now = times[79]  # the fastest fifth done, each seen working just before it ended
    fit = IntervalFit(256, tolerance=0.03)
    for t in times[:80]:
        fit.add(t - 0.1, t, None)
    alone = fit.refit()
    assert alone is not None
    for _ in range(30):  # a few steps each time: one completion after another
        with_them = fit.refit([now] * 320)
    assert with_them is not None
    truth = quantile(times, 0.5)
    assert alone.quantile(0.5) < 0.75 * truth
    assert with_them.quantile(0.5) == pytest.approx(truth, rel=0.08)


@dataclass
class Run:
    key: int


def test_working_runs_are_added_moved_and_removed_in_place() -> None:
    runs = WorkingRuns[Run]()
    a, b, c = Run(1), Run(2), Run(3)
    for run in (a, b, c):
        runs.add("k", run)
    runs.add("k", a)  # again: counted once
    runs.remove(a)  # the last one takes its place
    assert len(runs) == 2
    assert sorted(r.key for r in runs.sample("k", random.Random(0))[0]) == [2, 3]
    runs.add("followup", b)  # a run's next phase is learned under another key
    assert runs.sample("k", random.Random(0)) == ([c], 1.0)
    assert runs.sample("followup", random.Random(0)) == ([b], 1.0)
    runs.remove(Run(9))  # never counted: nothing to do
    runs.remove(b)
    runs.remove(c)
    assert len(runs) == 0
    assert runs.sample("k", random.Random(0)) == ([], 1.0)


def test_a_sample_of_many_runs_says_how_many_each_stands_for() -> None:
    runs = WorkingRuns[Run]()
    for i in range(1024):
        runs.add("k", Run(i))
    sample, weight = runs.sample("k", random.Random(0))
    assert len(sample) == 256
    assert len({r.key for r in sample}) == 256
    assert weight == 4.0


def quick(model: RunTimes[tuple[str, str]], n: int, *, planned: bool, working: int = 0) -> None:
    """Runs of 0.8 s, each found done at its first poll at 1 s: no fit is possible."""
    for _ in range(n):
        model.observe_done(
            KEY,
            1.0,
            first_poll=True,
            first_at=1.0,
            working=lambda: ([1.0] * working, 1.0),
            planned=planned,
        )


def test_first_polls_the_learned_schedule_did_not_place_do_not_steer_it() -> None:
    steered, released = RunTimes[tuple[str, str]](), RunTimes[tuple[str, str]]()
    quick(steered, 20, planned=False)
    quick(released, 20, planned=False)
    start = steered.next_delay(KEY, 0.0, 0, random.Random(0))
    # Fifteen runs of a cohort a scout's release polled at once, all found done there.
    quick(released, 15, planned=False)
    quick(steered, 15, planned=True)
    assert released.next_delay(KEY, 0.0, 0, random.Random(0)) == start
    assert steered.next_delay(KEY, 0.0, 0, random.Random(0)) < 0.8 * start


def test_without_a_fit_a_key_waits_until_half_its_cohort_was_seen_done() -> None:
    model = RunTimes[tuple[str, str]]()
    quick(model, 20, planned=False, working=80)
    assert not model.is_learned(KEY)
    quick(model, 20, planned=False, working=39)
    assert model.is_learned(KEY)
