"""The completion windows' poll scale on literal times: the window policy, the unlearned and the
learned schedule of an 8h key, its stalls, and the webhooks' safety net."""

from __future__ import annotations

import itertools
import math
import random

from runfleet.polling.learning import RunTimes
from runfleet.polling.policy import PollPolicy
from runfleet.polling.schedule import Backoff
from runfleet.polling.windows import window_policy, window_span

from .test_pacing import pacer, tracked

H8 = ("responses", "gpt-5-mini", "8h")
H2 = ("responses", "gpt-5-mini", "2h")
SOONEST = ("responses", "gpt-5-mini")
STEADY = PollPolicy(backoff=Backoff(jitter=0.0))  # no jitter: delays are exact


def test_a_window_key_gets_a_policy_on_the_window_scale() -> None:
    policy = PollPolicy()
    assert window_policy(policy, SOONEST) is policy
    assert window_policy(policy, ("assistants", "asst_1")) is policy
    h8, h2 = window_policy(policy, H8), window_policy(policy, H2)
    assert (h8.backoff.initial, h8.backoff.cap) == (360.0, 900.0)  # 6 min, 15 min
    assert (h2.backoff.initial, h2.backoff.cap) == (90.0, 225.0)
    assert (h8.stall_floor, h8.stall_unlearned) == (28800.0, 28800.0 * 1.1)
    assert (h8.backoff.factor, h8.min_samples) == (policy.backoff.factor, policy.min_samples)
    # A fleet scaled for a time-scaled simulator scales its windows with it.
    scaled = window_policy(policy.scaled(0.001), H8)
    assert window_span(policy.scaled(0.001), H8) == 28.8
    assert math.isclose(scaled.backoff.initial, 0.36)
    assert math.isclose(scaled.backoff.cap, 0.9)


def delays(model: RunTimes[tuple[str, ...]], key: tuple[str, ...], until: float) -> list[float]:
    """The un-jittered poll times of one run of ``key`` until one is at or past ``until``."""
    rng, at, attempt, times = random.Random(0), 0.0, 0, []
    while at < until:
        at += model.next_delay(key, at, attempt, rng)
        attempt += 1
        times.append(at)
    return times


def test_an_unlearned_8h_run_is_polled_minutes_apart_not_every_5_s() -> None:
    model = RunTimes[tuple[str, ...]](STEADY)
    assert delays(model, H8, 7200.0) == [
        360.0, 900.0, 1710.0, 2610.0, 3510.0, 4410.0, 5310.0, 6210.0, 7110.0, 8010.0,
    ]  # fmt: skip
    assert len(delays(model, SOONEST, 7200.0)) == 1444  # the classic loop on the same wait


def test_a_learned_8h_key_polls_where_its_runs_finish_at_a_gap_of_minutes() -> None:
    model = RunTimes[tuple[str, ...]](STEADY)
    rng = random.Random(3)
    for _ in range(256):
        model.observe_done(H8, rng.lognormvariate(math.log(7200.0), 0.3), first_poll=False)
    assert model.is_learned(H8)
    assert not model.is_learned(SOONEST)
    polls = delays(model, H8, 7200.0)
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    # The window's first poll (6 min), then the learned gap: nothing waits past one gap.
    assert polls[0] <= 360.0 + 900.0
    assert 300.0 < max(gaps) <= 900.0  # minutes, capped at the window policy's 15 min
    assert len(polls) <= 12


def test_a_run_queued_an_hour_in_an_8h_window_is_not_stalled() -> None:
    model = RunTimes[tuple[str, ...]]()
    assert model.is_stalled(SOONEST, 3600.0)
    assert not model.is_stalled(H8, 3600.0)
    assert not model.is_stalled(H8, 28800.0)
    assert model.is_stalled(H8, 28800.0 * 1.1 + 1)
    for _ in range(20):  # learned queues of 10 min: still not stalled within the window
        model.observe_queue(H8, 600.0)
    assert not model.is_stalled(H8, 3600.0)
    assert model.is_stalled(H8, 28801.0)


async def test_with_webhooks_an_8h_run_waits_its_whole_window_for_the_safety_net() -> None:
    runs = {i: tracked(i, f"resp_{i}") for i in range(50)}
    pace, _ = pacer(runs, safety_poll=60.0)
    dues = []
    for run in runs.values():
        run.learn_key = H8
        pace.reschedule(run, 0.0, None)
        dues.append(pace.schedule.due_of(run.key))
    # Never before the window's end (8 h), jittered up to 10 % past it, not 60 s.
    assert all(due is not None and 28800.0 <= due <= 1.1 * 28800.0 for due in dues)
    assert len(set(dues)) > 1


def test_unlearned_8h_runs_are_not_held_back_for_scouts() -> None:
    runs = {i: tracked(i, f"resp_{i}") for i in range(12)}
    for run in runs.values():
        run.learn_key = H8
    pace, _ = pacer(runs, safety_poll=None)
    for run in runs.values():
        pace.reschedule(run, 0.0, None)
    dues = [pace.schedule.due_of(i) for i in runs]
    # Every run's first poll at 6 min (±20 %): held runs would wait for a scout to see one done.
    assert all(due is not None and 0.8 * 360.0 <= due <= 1.2 * 360.0 for due in dues)
