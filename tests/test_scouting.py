"""Scouting, on literal numbers: which polls of an unlearned key's runs are skipped, and when
held runs are polled."""

from __future__ import annotations

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
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=1)
    first_delay(scouting, Run(0), None)
    old, young, moved_on = Run(1, phase_start=0.0), Run(2, phase_start=3.0), Run(3)
    for run in (old, young, moved_on):
        first_delay(scouting, run, None)
    moved_on.phase_start = 4.0  # a new phase (its tool outputs went out) since it was held

    released = scouting.release(KEY, 4.1, now=5.0, polls_by=polls_before)

    # At least as old as the evidence: now; younger: when it reaches that age.
    assert released == [(old, 5.0), (young, pytest.approx(7.1))]
    assert scouting.release(KEY, 4.1, now=6.0, polls_by=polls_before) == []  # released once


def test_a_released_run_counts_the_classic_polls_of_its_age_not_the_ones_it_skipped() -> None:
    """Found still working after its release, it waits the classic gap at its age."""
    scouting: Scouting[tuple[str, str], Run] = Scouting(scouts=1)
    first_delay(scouting, Run(0), None)
    held = Run(1)
    first_delay(scouting, held, None)
    assert held.attempt == 5  # its first four polls skipped: next gap 3.8 s

    [(run, due)] = scouting.release(KEY, 1.3, now=1.3, polls_by=polls_before)

    assert (run, due) == (held, 1.3)
    assert held.attempt == 2  # the classic loop's polls before 1.3 s: 0.5 and 1.25
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
