"""The poll heap and the classic backoff, driven synchronously with literal times."""

from __future__ import annotations

import math
import random
import re
import statistics

import pytest

from runfleet.polling.schedule import Backoff, PollSchedule

# --- PollSchedule -------------------------------------------------------------------------


def heap_entries(schedule: PollSchedule[int]) -> int:
    """Read the entries held in memory, stale ones included, off the schedule's repr."""
    found = re.search(r"heap_entries=(\d+)", repr(schedule))
    assert found is not None
    return int(found[1])


def test_pop_due_returns_due_keys_earliest_first() -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("c", 3.0)
    schedule.schedule("a", 1.0)
    schedule.schedule("b", 2.0)

    assert schedule.pop_due(5.0) == ["a", "b", "c"]
    assert len(schedule) == 0


def test_equal_due_times_pop_in_the_order_they_were_scheduled() -> None:
    schedule = PollSchedule[str]()
    for key in ["z", "a", "m", "b"]:
        schedule.schedule(key, 1.0)

    assert schedule.pop_due(1.0) == ["z", "a", "m", "b"]


def test_keys_need_not_be_orderable() -> None:
    schedule = PollSchedule[object]()
    first, second = object(), ("assistants", None)
    schedule.schedule(first, 1.0)
    schedule.schedule(second, 1.0)

    assert schedule.pop_due(1.0) == [first, second]


@pytest.mark.parametrize(
    ("now", "expected"),
    [(0.999, []), (1.0, ["a"]), (1.5, ["a"]), (2.0, ["a", "b"])],
)
def test_pop_due_includes_keys_due_exactly_now_and_nothing_later(
    now: float, expected: list[str]
) -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 1.0)
    schedule.schedule("b", 2.0)

    assert schedule.pop_due(now) == expected
    assert len(schedule) == 2 - len(expected)


def test_popped_keys_are_no_longer_scheduled() -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 1.0)
    schedule.pop_due(1.0)

    assert "a" not in schedule
    assert schedule.due_of("a") is None
    assert schedule.pop_due(10.0) == []


@pytest.mark.parametrize("new_due", [0.5, 3.0])
def test_rescheduling_replaces_the_old_due_time(new_due: float) -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 1.0)
    schedule.schedule("a", new_due)

    assert len(schedule) == 1
    assert schedule.due_of("a") == new_due
    assert schedule.next_due() == new_due
    assert schedule.pop_due(new_due - 0.01) == []
    assert schedule.pop_due(new_due) == ["a"]
    # The stale entry at 1.0 must not resurrect the key.
    assert schedule.pop_due(10.0) == []


def test_cancel_forgets_the_key_and_reports_whether_it_was_scheduled() -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 1.0)
    schedule.schedule("b", 2.0)

    assert schedule.cancel("a") is True
    assert schedule.cancel("a") is False
    assert schedule.cancel("never") is False
    assert "a" not in schedule
    assert schedule.next_due() == 2.0
    assert schedule.pop_due(10.0) == ["b"]


def test_next_due_skips_stale_entries_and_is_none_when_empty() -> None:
    schedule = PollSchedule[str]()
    assert schedule.next_due() is None

    schedule.schedule("a", 1.0)
    schedule.schedule("b", 2.0)
    schedule.schedule("a", 3.0)
    assert schedule.next_due() == 2.0

    schedule.cancel("b")
    assert schedule.next_due() == 3.0
    schedule.cancel("a")
    assert schedule.next_due() is None


def test_head_names_the_earliest_live_key_past_stale_entries() -> None:
    """The poll loop reads the head's run (its age) before it is admitted."""
    schedule = PollSchedule[str]()
    assert schedule.head() is None
    schedule.schedule("a", 1.0)
    schedule.schedule("b", 2.0)
    schedule.schedule("a", 3.0)  # a's first entry is stale now
    assert schedule.head() == (2.0, "b")
    schedule.cancel("b")
    assert schedule.head() == (3.0, "a")


def test_contains_due_of_and_len_see_live_entries_only() -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 1.0)
    schedule.schedule("a", 2.0)
    schedule.schedule("b", 5.0)

    assert len(schedule) == 2
    assert "a" in schedule
    assert "c" not in schedule
    assert schedule.due_of("a") == 2.0
    assert schedule.due_of("c") is None


@pytest.mark.parametrize("churn", ["reschedule", "cancel_then_schedule"])
def test_heap_stays_within_twice_the_live_entries_under_heavy_churn(churn: str) -> None:
    schedule = PollSchedule[int]()
    rng = random.Random(7)
    for key in range(100):
        schedule.schedule(key, 1e6 + key)

    # Each new due time is earlier than every old one, so stale entries sink instead of
    # surfacing where next_due() or pop_due() would drop them: only pruning bounds the heap.
    for step in range(100_000):
        key = rng.randrange(100)
        if churn == "cancel_then_schedule":
            schedule.cancel(key)
        schedule.schedule(key, 1e6 - step)
        assert heap_entries(schedule) <= 2 * len(schedule) + 1

    assert len(schedule) == 100
    assert len(schedule.pop_due(math.inf)) == 100


def test_cancelling_everything_empties_the_heap() -> None:
    schedule = PollSchedule[int]()
    for key in range(1000):
        schedule.schedule(key, 1.0)
    for key in range(1000):
        schedule.cancel(key)

    assert repr(schedule) == "<PollSchedule scheduled=0 heap_entries=0 next_due=None>"


def test_pop_due_limit_leaves_the_rest_scheduled_in_order() -> None:
    schedule = PollSchedule[str]()
    for due, key in enumerate("abcde"):
        schedule.schedule(key, float(due))

    assert schedule.pop_due(10.0, limit=2) == ["a", "b"]
    assert schedule.pop_due(10.0, limit=0) == []
    assert schedule.pop_due(10.0) == ["c", "d", "e"]


def test_pop_due_limit_counts_live_keys_not_stale_entries() -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 1.0)
    schedule.schedule("b", 2.0)
    schedule.schedule("a", 3.0)

    assert schedule.pop_due(10.0, limit=1) == ["b"]
    assert schedule.pop_due(10.0, limit=1) == ["a"]


def test_nan_due_time_is_refused() -> None:
    schedule = PollSchedule[str]()
    with pytest.raises(ValueError, match="due must be a number"):
        schedule.schedule("a", math.nan)


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be >= 0"):
        PollSchedule[str]().pop_due(1.0, limit=-1)


def test_repr_shows_live_state() -> None:
    schedule = PollSchedule[str]()
    schedule.schedule("a", 2.5)
    schedule.schedule("a", 1.5)

    assert repr(schedule) == "<PollSchedule scheduled=1 heap_entries=2 next_due=1.5>"


# --- Backoff --------------------------------------------------------------------------------

NO_JITTER = Backoff(jitter=0.0)


def test_delays_grow_by_factor_from_initial_up_to_cap() -> None:
    delays = [NO_JITTER.next_delay(attempt, random.Random(0)) for attempt in range(8)]

    assert delays == pytest.approx([0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875, 5.0, 5.0])


def test_base_delay_of_a_huge_attempt_is_the_cap_without_overflow() -> None:
    assert Backoff().base_delay(10**6) == 5.0
    assert Backoff(factor=1.0).base_delay(10**6) == 0.5


@pytest.mark.parametrize(("attempt", "base"), [(0, 0.5), (2, 1.125), (5, 3.796875)])
def test_jitter_stays_within_its_band_and_covers_both_sides(attempt: int, base: float) -> None:
    rng = random.Random(1)
    delays = [Backoff().next_delay(attempt, rng) for _ in range(10_000)]

    assert min(delays) >= base * 0.8
    assert max(delays) <= base * 1.2
    # Symmetric: as many draws below the base as above, and both edges are reached.
    assert statistics.fmean(delays) == pytest.approx(base, rel=0.01)
    assert min(delays) < base * 0.81
    assert max(delays) > base * 1.19


def test_jittered_delays_never_exceed_the_cap() -> None:
    rng = random.Random(2)
    delays = [Backoff().next_delay(attempt, rng) for attempt in range(20) for _ in range(500)]

    assert max(delays) == 5.0
    assert min(d for d in delays if d > 4) >= 4.0


def test_delay_never_goes_below_min_interval() -> None:
    backoff = Backoff(initial=0.01, jitter=0.5, min_interval=0.05)
    rng = random.Random(3)

    assert min(backoff.next_delay(0, rng) for _ in range(1000)) == 0.05


@pytest.mark.parametrize(
    ("attempt", "poll_after", "expected"),
    [
        (0, 0.2, 0.5),  # hint below the backoff: the backoff stands
        (0, 2.0, 2.0),  # hint above it: the hint wins
        (9, 8.0, 8.0),  # hint above the cap: the server's word beats the cap
        (0, 0.0, 0.5),
    ],
)
def test_delay_is_never_below_the_servers_poll_after_hint(
    attempt: int, poll_after: float, expected: float
) -> None:
    assert NO_JITTER.next_delay(attempt, random.Random(0), poll_after=poll_after) == expected


def test_hint_is_honoured_whatever_the_jitter_draws() -> None:
    rng = random.Random(4)
    assert min(Backoff().next_delay(3, rng, poll_after=2.0) for _ in range(1000)) == 2.0


def test_attempt_zero_starts_again_from_initial_after_a_restart() -> None:
    # The caller resets attempt when a tool round is answered; the policy keeps no state.
    backoff = Backoff()
    rng = random.Random(5)
    before = [backoff.next_delay(attempt, rng) for attempt in range(6)]
    after = backoff.next_delay(0, rng)

    assert before[-1] > 3.0
    assert 0.4 <= after <= 0.6


def test_the_classic_gap_grows_linearly_with_age() -> None:
    """Polls at 0.5, 1.25, 2.375 s are 0.75, 1.125, 1.6875 s apart: 0.5 s plus half the age."""
    assert [Backoff().gap_at(age) for age in (0.0, 0.5, 1.25, 2.375)] == [
        0.5,
        0.75,
        1.125,
        1.6875,
    ]


@pytest.mark.parametrize(
    ("seconds", "polls"),
    [(0.0, 1), (0.5, 1), (0.51, 2), (1.25, 2), (8.0, 6), (10.390625, 6), (10.4, 7), (60.0, 16)],
)
def test_polls_for_counts_the_un_jittered_polls_until_one_sees_the_run_done(
    seconds: float, polls: int
) -> None:
    # Polls at 0.5, 1.25, 2.375, 4.0625, 6.59375, 10.390625, then every 5 s.
    assert Backoff().polls_for(seconds) == polls


def test_polls_for_follows_the_fields_and_the_floor() -> None:
    assert Backoff(initial=1.0, factor=2.0, cap=4.0).polls_for(11.0) == 4  # 1, 3, 7, 11
    assert Backoff(initial=0.01, cap=1.0, min_interval=0.5).polls_for(1.0) == 2


def test_same_seed_gives_the_same_delays() -> None:
    first = [Backoff().next_delay(a, random.Random(9)) for a in range(10)]
    second = [Backoff().next_delay(a, random.Random(9)) for a in range(10)]

    assert first == second


def test_zero_jitter_draws_nothing_from_the_rng() -> None:
    rng = random.Random(6)
    NO_JITTER.next_delay(3, rng)

    assert rng.random() == random.Random(6).random()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 0.9}, "factor must be >= 1"),
        ({"initial": -0.5}, "initial must be a finite number >= 0"),
        ({"initial": 0.0}, "initial must be > 0"),
        ({"cap": -1.0}, "cap must be a finite number >= 0"),
        ({"cap": math.inf}, "cap must be a finite number >= 0"),
        ({"jitter": -0.1}, "jitter must be a finite number >= 0"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"min_interval": -0.01}, "min_interval must be a finite number >= 0"),
        ({"initial": 2.0, "cap": 1.0}, r"cap \(1.0\) must be >= initial \(2.0\)"),
        ({"min_interval": 6.0}, r"and >= min_interval \(6.0\)"),
        ({"factor": math.nan}, "factor must be a finite number >= 0"),
    ],
)
def test_invalid_backoff_is_refused_with_a_clear_message(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


@pytest.mark.parametrize(
    ("attempt", "poll_after", "message"),
    [
        (-1, None, "attempt must be >= 0"),
        (0, -0.5, "poll_after must be >= 0 seconds"),
        (0, math.nan, "poll_after must be >= 0 seconds"),
    ],
)
def test_invalid_next_delay_arguments_are_refused(
    attempt: int, poll_after: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff().next_delay(attempt, random.Random(0), poll_after=poll_after)


def test_backoff_is_immutable() -> None:
    backoff = Backoff()
    with pytest.raises(AttributeError):
        backoff.cap = 10.0  # type: ignore[misc]
