"""Scouting, on literal numbers: which polls of an unlearned key's runs are skipped, and when
held runs are polled."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from runfleet.polling.schedule import Backoff
from runfleet.polling.scouting import Scouting

KEY = ("responses", "m")
CLASSIC = Backoff(jitter=0.0)  # polls at 0.5, 1.25, 2.375, 4.06, 6.6, 10.4 s...


@dataclass
class Run:
    key: int
    phase_start: float = 0.0
    attempt: int = 0
    scout: bool | None = None


def step(_age: float, attempt: int) -> float:
    return CLASSIC.base_delay(attempt)


def polls_before(age: float) -> int:
    """The classic loop's polls before ``age``, as the pacer counts them."""
    return CLASSIC.polls_for(age) - 1


def gap(age: float) -> float:
    """The classic loop's gap at ``age``, over which released runs are spread."""
    return min(CLASSIC.gap_at(age), CLASSIC.cap)


def ten_scouts() -> Scouting[tuple[str, str], Run]:
    """Scouting with its ten scouts placed (runs 100-109): the next runs of KEY are held."""
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=10)
    for i in range(100, 110):
        first_delay(scouting, Run(i), None)
    return scouting


def release(
    scouting: Scouting[tuple[str, str], Run], earliest: float, now: float
) -> list[tuple[Run, float]]:
    return scouting.release(KEY, earliest, now, polls_before, gap, random.Random(0), scout=True)


def first_delay(
    scouting: Scouting[tuple[str, str], Run], run: Run, earliest: float | None
) -> float:
    """Reschedule a run at the start of its phase, as the engine does."""
    delay = step(0.0, run.attempt)
    run.attempt += 1
    return scouting.delay(run, KEY, 0.0, delay, step, earliest)


def test_the_first_runs_of_a_key_are_scouts_polled_the_classic_way() -> None:
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=3)
    runs = [Run(i) for i in range(5)]
    delays = [first_delay(scouting, run, None) for run in runs]

    assert [run.scout for run in runs] == [True, True, True, False, False]
    assert delays[:3] == [0.5] * 3


def test_with_no_run_seen_done_the_others_skip_their_first_four_polls() -> None:
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=1)
    first_delay(scouting, Run(0), None)
    run = Run(1)

    delay = first_delay(scouting, run, None)

    assert delay == pytest.approx(0.5 + 0.75 + 1.125 + 1.6875 + 2.53125)  # the fifth poll
    assert run.attempt == 5
    # Later polls of the phase are never skipped.
    assert scouting.delay(run, KEY, delay, 3.8, step, None) == 3.8


def test_a_run_seen_done_young_lets_the_others_poll_from_that_age() -> None:
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=1)
    first_delay(scouting, Run(0), None)

    # Seen done at 2.0 s: the polls at 0.5 and 1.25 s are skipped, the one at 2.375 s is not.
    assert first_delay(scouting, Run(1), 2.0) == pytest.approx(2.375)
    assert first_delay(scouting, Run(2), 0.1) == 0.5


def test_held_runs_are_released_when_a_run_of_their_key_is_seen_done() -> None:
    scouting = ten_scouts()
    old, young, moved_on = Run(1, phase_start=0.0), Run(2, phase_start=3.0), Run(3)
    for run in (old, young, moved_on):
        first_delay(scouting, run, None)
    moved_on.phase_start = 4.0  # a new phase (its tool outputs went out) since it was held

    released = release(scouting, 4.1, now=5.0)

    # At least as old as the evidence: from now; younger: from when it reaches that age; each
    # within 0.9 of the classic gap at its age (one scout of ten seen done).
    [(first, old_due), (second, young_due)] = released
    assert (first, second) == (old, young)
    assert 5.0 <= old_due <= 5.0 + 0.9 * gap(5.0)
    assert 7.1 < young_due <= 7.1 + 0.9 * gap(4.1)
    scouting.polled(old, KEY)  # its release poll found it working: done with
    # Another scout seen done (the second of ten): the young run's spread narrows from 0.9
    # of the gap to 0.8 of it; the old run is not released again.
    [(again, sooner)] = release(scouting, 4.1, now=6.0)
    assert again is young
    assert sooner == pytest.approx(7.1 + (young_due - 7.1) * 0.8 / 0.9)
    assert sooner < young_due
    scouting.polled(young, KEY)
    assert release(scouting, 4.1, now=8.0) == []
    assert "held=0 released=0" in repr(scouting)


def test_a_held_cohort_is_spread_over_one_classic_gap() -> None:
    """Not all at the age the first run was seen done, where few of them are done yet; as
    more scouts are seen done, closer to it."""
    scouting = ten_scouts()
    cohort = [Run(i) for i in range(90)]
    for run in cohort:
        first_delay(scouting, run, None)

    dues = {run.key: due for run, due in release(scouting, 2.4, now=2.4)}

    assert len(dues) == 90
    assert min(dues.values()) >= 2.4
    assert max(dues.values()) <= 2.4 + 0.9 * gap(2.4)
    assert max(dues.values()) - min(dues.values()) > 0.8 * gap(2.4)  # not bunched at one age
    # Eight more scouts seen done by 2.45 s (runs that end close together): the nine of ten
    # leave the runs not yet polled a tenth of the gap from 2.4 s.
    for _ in range(8):
        for run, due in release(scouting, 2.4, now=2.45):
            dues[run.key] = min(dues[run.key], due)
    assert max(dues.values()) <= 2.4 + 0.1 * gap(2.4)
    # All ten: every run not yet polled is polled now.
    for run, due in release(scouting, 2.4, now=2.5):
        dues[run.key] = min(dues[run.key], due)
    assert max(dues.values()) <= 2.5


def test_a_released_run_counts_the_classic_polls_of_its_age_not_the_ones_it_skipped() -> None:
    """Found still working after its release, it waits the classic gap at its age."""
    scouting = ten_scouts()
    held = Run(1)
    first_delay(scouting, held, None)
    assert held.attempt == 5  # its first four polls skipped: next gap 3.8 s

    [(run, due)] = release(scouting, 1.3, now=1.3)

    assert run is held
    assert 1.3 <= due < 2.375  # within the gap at 1.3 s (1.15 s), before the next classic poll
    assert held.attempt == 2  # the classic loop's polls before it: 0.5 and 1.25 s
    assert CLASSIC.base_delay(held.attempt) == pytest.approx(1.125)  # next near its 2.375 s


def test_a_scout_that_ends_frees_its_place() -> None:
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=1)
    scout = Run(0)
    first_delay(scouting, scout, None)
    scouting.ended(scout, KEY)
    assert scout.scout is None

    nxt = Run(1)
    assert first_delay(scouting, nxt, None) == 0.5
    assert nxt.scout is True


def test_other_keys_have_scouts_of_their_own() -> None:
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=1)
    first_delay(scouting, Run(0), None)
    other = Run(1)
    other.attempt += 1
    assert scouting.delay(other, ("responses", "other"), 0.0, 0.5, step, None) == 0.5
    assert other.scout is True


@pytest.mark.parametrize(("scouts", "max_skipped"), [(0, 4), (1, -1)])
def test_bad_settings_are_refused(scouts: int, max_skipped: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        Scouting(scouts=scouts, max_skipped=max_skipped)
