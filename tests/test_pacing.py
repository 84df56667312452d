"""When runs are polled next, on literal times: the safety net, early events, deadlines."""

from __future__ import annotations

import random

from openai import AsyncOpenAI

from runfleet.admission.gate import RequestGate
from runfleet.admission.quota import RequestQuota
from runfleet.engine.run import Tracked
from runfleet.kinds.base import RunRef
from runfleet.kinds.responses import ResponsesKind
from runfleet.polling.learning import RunTimes
from runfleet.polling.pacing import Pacer
from runfleet.stats import StatsCollector


def tracked(key: int, response_id: str, *, deadline: float | None = None) -> Tracked:
    client = AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")  # never called
    gate = RequestGate(RequestQuota(600), StatsCollector(), concurrency=4)
    return Tracked(
        key=key,
        kind=ResponsesKind(client, gate),
        spec=None,
        ref=RunRef(id=response_id, chain=[response_id]),
        learn_key=("responses", "m"),
        created=0.0,
        phase_start=0.0,
        deadline=deadline,
    )


def pacer(
    runs: dict[int, Tracked], *, safety_poll: float | None
) -> tuple[Pacer[Tracked], list[int]]:
    signals: list[int] = []
    made = Pacer(
        runs=runs,
        times=RunTimes(),
        rng=random.Random(1),
        safety_poll=safety_poll,
        signal=lambda: signals.append(1),
    )
    return made, signals


async def test_webhook_runs_wait_on_the_safety_net_and_an_early_event_polls_at_once() -> None:
    runs = {1: tracked(1, "resp_1"), 2: tracked(2, "resp_2")}
    pace, _ = pacer(runs, safety_poll=60.0)
    # resp_2's event arrives while its create is still in flight: nobody waits on it yet.
    assert pace.notified("resp_2") is None
    pace.reschedule(runs[1], 1.0, None)
    pace.reschedule(runs[2], 1.0, None)
    assert pace.schedule.due_of(2) == 1.0
    due = pace.schedule.due_of(1)
    assert due is not None
    assert 1.0 + 48.0 <= due <= 1.0 + 72.0
    assert pace.notified("resp_1") is runs[1]
    # The early event is used once: resp_2's next wait is the safety net again.
    pace.reschedule(runs[2], 2.0, None)
    due = pace.schedule.due_of(2)
    assert due is not None
    assert due >= 50.0


async def test_without_webhooks_an_unlearned_run_is_first_polled_as_the_classic_loop() -> None:
    runs = {1: tracked(1, "resp_1")}
    pace, signals = pacer(runs, safety_poll=None)
    pace.reschedule(runs[1], 0.0, None)
    due = pace.schedule.due_of(1)
    assert due is not None
    assert 0.4 <= due <= 0.6  # 0.5 s +-20 %, a scout of its key
    assert signals == [1]  # the heap's head moved: the loop is woken
    assert pace.notified("resp_1") is None


async def test_a_deadline_comes_before_the_next_poll() -> None:
    runs = {1: tracked(1, "resp_1", deadline=10.0)}
    pace, _ = pacer(runs, safety_poll=60.0)
    pace.reschedule(runs[1], 5.0, None)
    assert pace.schedule.due_of(1) == 10.0
    pace.forget(runs[1])
    assert pace.schedule.due_of(1) is None
    assert "resp_1" not in pace.by_response


async def test_events_for_unknown_responses_are_remembered_up_to_a_bound() -> None:
    """A flood of events for responses this fleet never waits on keeps the newest 4,096."""
    runs = {1: tracked(1, "resp_0"), 2: tracked(2, "resp_9999")}
    pace, _ = pacer(runs, safety_poll=60.0)
    for i in range(10_000):
        assert pace.notified(f"resp_{i}") is None  # nobody waits yet
    assert len(pace._early) == 4_096
    pace.reschedule(runs[1], 1.0, None)  # the oldest event was forgotten: the safety net
    due = pace.schedule.due_of(1)
    assert due is not None
    assert due > 1.0
    pace.reschedule(runs[2], 1.0, None)  # the newest is still there: polled at once
    assert pace.schedule.due_of(2) == 1.0
