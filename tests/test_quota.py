"""RequestQuota on a fake loop clock: the 60 s invariant, priorities, cancellation, 429s, headers.

Every async test runs under looptime, so simulated minutes take milliseconds; tests wait on the
quota's state (its queue, its admissions), and sleep only to place an event at a simulated time.
The mark goes on each async test, not on the module: looptime 0.9 on a sync test makes a loop
that is never closed, a ResourceWarning that filterwarnings=error turns into a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from runfleet.admission.bucket import LeakyBucket, Rate
from runfleet.admission.quota import Priority, RequestQuota
from runfleet.errors import QuotaExhausted
from runfleet.sim.ratelimit import TokenBucket
from runfleet.sim.scenario import Quota, Storms

from .test_admission import max_in_window

STEP_60 = 60.25 / 59  # one drain step at 60 rpm: burst 1, a quarter second's delay allowed


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds; simulated time does not move meanwhile."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def saturate(
    quota: RequestQuota, until_time: float, *, workers: int = 8, priority: Priority = Priority.POLL
) -> list[float]:
    """Acquire as fast as the quota allows from several tasks; return the admission times."""
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def worker() -> None:
        while True:
            await quota.acquire(priority)
            if (now := loop.time()) >= until_time:
                return
            times.append(now)

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())
    return sorted(times)


def test_priorities_run_from_submit_down_to_poll() -> None:
    assert sorted(Priority, reverse=True) == [
        Priority.SUBMIT,
        Priority.FETCH,
        Priority.CANCEL,
        Priority.CREATE,
        Priority.POLL,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rpm": 0}, "rpm must be"),
        ({"rpm": math.nan}, "rpm must be"),
        ({"rpm": 60, "burst": 0}, "burst must be"),
        ({"rpm": 60, "max_consecutive_rate_limits": 0}, "max_consecutive_rate_limits"),
        ({"rpm": 60, "create_share": 0}, "create_share must be in"),
        ({"rpm": 60, "create_share": 1.5}, "create_share must be in"),
        ({"rpm": 60, "poll_patience": -1}, "poll_patience must be >= 0"),
    ],
)
def test_bad_settings_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RequestQuota(**kwargs)


# -- the 60-second invariant -----------------------------------------------------------------


@pytest.mark.looptime
async def test_saturated_for_five_minutes_no_window_exceeds_rpm_or_burst() -> None:
    quota = RequestQuota(600)  # capacity 10 - 2.5, drain (600 - 7.5) / 60.25 per second
    times = await saturate(quota, until_time=300.0)
    # The whole quota is used even by a server minute that sees a quarter second more (600, or
    # 599 when float rounding puts the last one just past the window).
    assert max_in_window(times, 60.25) in (599, 600)
    assert max_in_window(times, 1.0) == 17  # floor(7.5 + 592.5 / 60.25): full bucket, 1 s drain
    assert abs(len(times) - (7.5 + 592.5 * 300 / 60.25)) <= 1


@pytest.mark.looptime
async def test_back_off_recovery_and_learned_limits_keep_every_window_under_rpm() -> None:
    quota = RequestQuota(600, burst=30)

    async def disturb() -> None:
        await asyncio.sleep(70)
        quota.on_rate_limited(2.0)
        await asyncio.sleep(60)
        quota.observe({"x-ratelimit-limit-requests": "450"})
        await asyncio.sleep(30)
        quota.observe({"x-ratelimit-limit-requests": "600"})

    async with asyncio.TaskGroup() as tg:
        tg.create_task(disturb())
        saturation = tg.create_task(saturate(quota, until_time=300.0))
    times = saturation.result()
    assert max_in_window(times, 60.0) <= 600
    assert max_in_window(times, 1.0) <= math.floor(30 + 570 / 60)
    assert not [t for t in times if 70.0 < t < 72.0]
    # From 130 s the server's 450 rpm rules: capacity 22.5, drain (450 - 22.5) / 60 per second.
    assert len([t for t in times if 140.0 <= t <= 160.0]) <= 22.5 + 7.125 * 20


@pytest.mark.parametrize(
    ("kwargs", "refused", "busiest_minute"),
    [({"delay_allowance": 0.0}, 3, 1202), ({}, 0, 1197)],
)
@pytest.mark.looptime
async def test_requests_held_up_on_the_way_overdraw_neither_the_servers_second_nor_minute(
    kwargs: dict[str, Any], refused: int, busiest_minute: int
) -> None:
    """The bench's tight cold start: a stall holds the first requests while the quota drains.

    ``bench --scenario tight --time-scale 0.5`` gives the fleet 1200 rpm with a burst of 10,
    and the simulator a bucket of 10 refilled at 20/s. Measured: the requests admitted in the
    first 0.1 s (connection setup, a stalled loop) reached the server within 30 ms of each
    other. With nothing held back that is the burst plus two drain steps, two 429s, and the
    next request finds the server's bucket still empty (this model neither pauses nor retries);
    the server's busiest minute, which starts at the late first arrival, also runs over.
    """
    quota = RequestQuota(1200, burst=10, **kwargs)
    admitted = await saturate(quota, until_time=61.0)
    server = TokenBucket(Quota(rpm=1200, window=0.5), Storms())
    arrivals = sorted(max(t, 0.12) for t in admitted)
    rejected = [server.admit(t).admitted for t in arrivals].count(False)
    assert (rejected, max_in_window(arrivals, 60.0)) == (refused, busiest_minute)


# -- priorities ----------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_late_submit_is_admitted_before_every_queued_poll() -> None:
    quota, order = RequestQuota(60), []

    async def request(name: str, priority: Priority) -> None:
        await quota.acquire(priority)
        order.append(name)

    async with asyncio.TaskGroup() as tg:
        for n in range(5):
            tg.create_task(request(f"poll{n}", Priority.POLL))
        await until(lambda: quota.stats().waiting[Priority.POLL] == 4)
        tg.create_task(request("submit", Priority.SUBMIT))
    assert order == ["poll0", "submit", "poll1", "poll2", "poll3", "poll4"]


@pytest.mark.looptime
async def test_waiters_go_by_priority_then_arrival_creates_and_polls_by_share() -> None:
    quota, order = RequestQuota(60), []
    loop = asyncio.get_running_loop()
    await quota.acquire(Priority.POLL)  # empties the bucket: everyone below has to queue

    async def request(priority: Priority, n: int) -> None:
        await quota.acquire(priority)
        order.append((priority.name, n, round(loop.time() / STEP_60)))

    arrivals = [(p, n) for n in range(2) for p in Priority]  # lowest priority first
    async with asyncio.TaskGroup() as tg:
        for priority, n in sorted(arrivals, key=lambda a: a[0]):
            tg.create_task(request(priority, n))
    strict = [
        (p.name, n) for p in (Priority.SUBMIT, Priority.FETCH, Priority.CANCEL) for n in (0, 1)
    ]
    # Then creates and polls share the slots: by default they alternate, a create first.
    shared = [("CREATE", 0), ("POLL", 0), ("CREATE", 1), ("POLL", 1)]
    assert [(name, n) for name, n, _ in order] == strict + shared
    assert [slot for _, _, slot in order] == list(range(1, 11))  # one per drain step, none lost


@pytest.mark.looptime
async def test_creates_faster_than_the_quota_delay_a_poll_by_a_few_steps_not_forever() -> None:
    # 60 RPM admits one request a second; creates arrive two a second, forever, and a backlog
    # of them is queued before the poll. Creates first would hold the poll until the backlog
    # drains (never); with a quarter of the slots theirs, the poll goes within a few steps.
    quota, step = RequestQuota(60, create_share=0.25), STEP_60
    loop = asyncio.get_running_loop()
    admitted: list[tuple[str, float, float]] = []

    async def request(name: str, priority: Priority) -> None:
        arrived = loop.time()
        await quota.acquire(priority)
        admitted.append((name, arrived, loop.time()))

    async with asyncio.TaskGroup() as tg:
        await quota.acquire(Priority.CREATE)  # empties the bucket
        creates = [tg.create_task(request(f"backlog{n}", Priority.CREATE)) for n in range(50)]
        for n in range(60):
            creates.append(tg.create_task(request(f"create{n}", Priority.CREATE)))
            if n == 1:
                tg.create_task(request("poll", Priority.POLL))
            await asyncio.sleep(0.5)
        await until(lambda: any(name == "poll" for name, _, _ in admitted))
        for task in creates:
            task.cancel()
    _, arrived, at = next(a for a in admitted if a[0] == "poll")
    assert at - arrived < 2 * step


@pytest.mark.looptime
@pytest.mark.parametrize(("late", "first"), [(5.0, "poll"), (1.0, "c0")])
async def test_a_poll_due_past_its_patience_goes_before_every_create(
    late: float, first: str
) -> None:
    # 60 RPM, patience 3 admissions: 3 s. A poll whose run has been due 5 s goes before a
    # backlog of creates; one due 1 s ago still alternates with them (a create first).
    quota = RequestQuota(60, poll_patience=3)
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def request(name: str, priority: Priority, since: float | None = None) -> None:
        await quota.acquire(priority, since=since)
        order.append(name)

    async with asyncio.TaskGroup() as tg:
        await quota.acquire(Priority.CREATE)  # empties the bucket: everyone below queues
        for n in range(10):
            tg.create_task(request(f"c{n}", Priority.CREATE))
        tg.create_task(request("poll", Priority.POLL, since=loop.time() - late))
        await until(lambda: quota.stats().waiting_total == 11)
    assert order[0] == first
    assert order.index("poll") <= 1


@pytest.mark.looptime
async def test_while_both_wait_creates_get_their_share_and_each_class_keeps_its_order() -> None:
    # No poll ages into priority here (the one before covers it): the share alone.
    quota = RequestQuota(60, create_share=0.25, poll_patience=math.inf)
    order: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        await quota.acquire(priority)
        order.append(name)

    async with asyncio.TaskGroup() as tg:
        await quota.acquire(Priority.CREATE)  # empties the bucket: everyone below queues
        for n in range(40):
            tg.create_task(request(f"c{n}", Priority.CREATE))
        for n in range(40):
            tg.create_task(request(f"p{n}", Priority.POLL))
        await until(lambda: quota.stats().waiting_total == 80)
    first = order[:40]
    # One create in four while polls wait (the first choice goes to a create), arrival order
    # within each class, and the creates left over take every slot once the polls are done.
    assert [name[0] for name in first[:8]] == list("cpppcppp")
    assert sum(name[0] == "c" for name in first) == 10
    assert [n for n in order if n[0] == "p"] == [f"p{n}" for n in range(40)]
    assert [n for n in order if n[0] == "c"] == [f"c{n}" for n in range(40)]
    assert order[-20:] == [f"c{n}" for n in range(20, 40)]


@pytest.mark.looptime
async def test_only_the_head_waits_on_a_timer_however_many_wait() -> None:
    quota = RequestQuota(6000)
    loop = asyncio.get_running_loop()
    admitted: list[int] = []

    async def request(n: int) -> None:
        await quota.acquire(Priority.POLL)
        admitted.append(n)

    async with asyncio.TaskGroup() as tg:
        for n in range(2000):
            tg.create_task(request(n))
        await until(lambda: quota.stats().waiting_total == 2000 - 75)  # a burst of 100 - 25
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(timers) == 1
    assert admitted == list(range(2000))


# -- cancellation ----------------------------------------------------------------------------


async def _queue_polls(quota: RequestQuota, count: int) -> list[asyncio.Task[float]]:
    loop = asyncio.get_running_loop()

    async def request() -> float:
        await quota.acquire(Priority.POLL)
        return loop.time()

    tasks = [asyncio.create_task(request()) for _ in range(count)]
    await until(lambda: quota.stats().waiting_total == count - 1)  # the first goes at once
    return tasks


@pytest.mark.looptime
async def test_cancelling_a_queued_acquire_neither_wedges_the_queue_nor_loses_a_slot() -> None:
    quota = RequestQuota(60)
    first, head, victim, last = await _queue_polls(quota, 4)
    victim.cancel()
    await until(lambda: quota.stats().waiting_total == 2)
    assert await first == 0.0
    assert await head == pytest.approx(STEP_60)
    assert await last == pytest.approx(2 * STEP_60)
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert quota.stats().admitted[Priority.POLL] == 3


@pytest.mark.looptime
async def test_cancelling_the_head_hands_its_role_on() -> None:
    quota = RequestQuota(60)
    first, head, second, third = await _queue_polls(quota, 4)
    head.cancel()
    assert await second == pytest.approx(STEP_60)
    assert await third == pytest.approx(2 * STEP_60)
    assert quota.stats().waiting_total == 0
    assert head.cancelled()
    await first


@pytest.mark.looptime
async def test_a_slot_granted_to_a_waiter_cancelled_before_it_ran_passes_to_the_next() -> None:
    loop = asyncio.get_running_loop()
    victim: asyncio.Task[None] | None = None

    class CancelOnGrant(LeakyBucket):
        """Cancels the victim in the very step its slot is granted, before it can resume."""

        async def reserve(self, now: float, rate: Rate) -> float:
            wait = self.admit(now, rate)
            if wait == 0.0 and victim is not None and now > 0.0:
                loop.call_soon(victim.cancel)  # queued ahead of the victim's wake-up
            return wait

    quota = RequestQuota(60, bucket=CancelOnGrant())
    first, head = await _queue_polls(quota, 2)
    victim = asyncio.create_task(quota.acquire(Priority.SUBMIT))  # the top of the heap
    await until(lambda: quota.stats().waiting[Priority.SUBMIT] == 1)
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert await head == pytest.approx(STEP_60)  # the victim's slot, not one step later
    assert quota.stats().admitted == {**dict.fromkeys(Priority, 0), Priority.POLL: 2}
    await first


# -- 429s ----------------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_after_a_429_pause_admissions_resume_spaced_at_the_lowered_rate() -> None:
    quota = RequestQuota(600)

    async def rate_limited_at_10s() -> None:
        await asyncio.sleep(10)
        with capture_logs() as logs:
            assert quota.on_rate_limited(2.0) == 1
        assert logs == [
            {
                "event": "quota_paused",
                "log_level": "warning",
                "retry_after": 2.0,
                "paused_for": 2.0,
                "rate": 420.0,
                "consecutive": 1,
            }
        ]
        assert repr(quota) == "<RequestQuota rpm=420/600 waiting=8 paused=2.0s>"

    async with asyncio.TaskGroup() as tg:
        tg.create_task(rate_limited_at_10s())
        saturation = tg.create_task(saturate(quota, until_time=15.0))
    after = [t for t in saturation.result() if t > 10.0]
    step = 1 / Rate(rpm=420, capacity=5.25, delay=0.25).per_second
    assert after[0] == pytest.approx(12.0 + step)  # not a burst of 5 the instant it lifts
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) == pytest.approx(step, abs=2e-6)  # looptime ticks in microseconds
    assert max(gaps) == pytest.approx(step, abs=2e-6)


@pytest.mark.looptime
async def test_the_rate_returns_to_the_configured_rpm_after_enough_clean_time() -> None:
    quota = RequestQuota(600)
    quota.on_rate_limited(2.0)  # 420 rpm from 2 s, +60 rpm per 10 s clean: 600 from 32 s
    with capture_logs() as logs:
        times = await saturate(quota, until_time=40.0)
    assert [e["rpm"] for e in logs if e["event"] == "quota_rate_changed"] == [
        420.0,
        480.0,
        540.0,
        600.0,
    ]
    assert quota.stats().effective_rpm == 600
    tail = [t for t in times if t > 33.0]
    full_step = 1 / Rate(rpm=600, capacity=7.5, delay=0.25).per_second
    assert [b - a for a, b in itertools.pairwise(tail)] == pytest.approx(
        [full_step] * (len(tail) - 1), abs=2e-6
    )


@pytest.mark.looptime
async def test_persistent_429s_fail_every_waiter_with_quota_exhausted() -> None:
    quota = RequestQuota(60, max_consecutive_rate_limits=3)
    for _ in range(2):
        quota.on_rate_limited(None)
        await asyncio.sleep(5)  # past the 1 s pause: the next 429 is a new one, not an echo
        quota.observe({}, status=503)  # not a success: the run of 429s goes on
    assert quota.stats().consecutive_rate_limits == 2
    first, *waiting = await _queue_polls(quota, 4)
    quota.observe({}, status=429)
    for task in waiting:
        with pytest.raises(QuotaExhausted, match="3 consecutive rate-limit pauses"):
            await task
    with pytest.raises(QuotaExhausted):
        await quota.acquire(Priority.SUBMIT)
    await first
    stats = quota.stats()
    assert (stats.exhausted, stats.waiting_total, stats.rate_limited) == (True, 0, 3)


@pytest.mark.looptime
async def test_a_success_between_429s_keeps_the_quota_alive() -> None:
    quota = RequestQuota(60, max_consecutive_rate_limits=2)
    quota.on_rate_limited(None)
    await asyncio.sleep(5)
    quota.observe({}, status=200)
    quota.on_rate_limited(None)
    await asyncio.sleep(5)
    await quota.acquire(Priority.POLL)
    assert quota.stats().consecutive_rate_limits == 1


# -- learning from headers -------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_lower_server_limit_is_adopted_and_logged() -> None:
    quota = RequestQuota(3000)
    with capture_logs() as logs:
        quota.observe({"x-ratelimit-limit-requests": "1200", "x-ratelimit-remaining-requests": "7"})
    stats = quota.stats()
    assert (stats.effective_rpm, stats.burst, stats.server_remaining) == (1200, 15, 7)
    quota.observe({"x-ratelimit-limit-requests": "9000"})
    logs = [entry for entry in logs if entry["event"].startswith("quota_")]
    assert logs[0] == {
        "event": "quota_limit_learned",
        "log_level": "info",
        "server_limit": 1200.0,
        "limit": 1200.0,
        "configured_rpm": 3000.0,
    }
    stats = quota.stats()
    assert (stats.effective_rpm, stats.burst) == (3000, 37.5)  # never above the configured rpm
    assert stats.server_limit == 9000


@pytest.mark.looptime
async def test_an_empty_server_quota_holds_admissions_until_the_reset() -> None:
    quota = RequestQuota(600)
    loop = asyncio.get_running_loop()
    quota.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    assert quota.stats().paused_until == 1.5
    await quota.acquire(Priority.FETCH)
    assert loop.time() == 1.5  # the server's quota is full again then: no step more


@pytest.mark.looptime
async def test_a_server_quota_each_request_empties_still_gets_its_rate() -> None:
    # 60 RPM enforced per second: the server holds one request, so every answer says
    # "0 remaining, full again in 1 s". Each hold must end at that reset, not a step later.
    quota = RequestQuota(60)
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(30):
        await quota.acquire(Priority.POLL)
        times.append(loop.time())
        await asyncio.sleep(0.05)  # the round trip
        quota.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"})
    assert len(times) / (times[-1] - times[0] + 1.05) > 0.9  # requests a second; was 0.5


@pytest.mark.looptime
async def test_malformed_headers_are_ignored() -> None:
    quota = RequestQuota(600)
    quota.observe({"x-ratelimit-limit-requests": "many", "x-ratelimit-reset-requests": "-1s"})
    await quota.acquire(Priority.POLL)
    assert quota.stats().effective_rpm == 600


# -- the rest of the surface -----------------------------------------------------------------


@pytest.mark.looptime
async def test_stats_is_a_snapshot() -> None:
    quota = RequestQuota(120, burst=2)
    await quota.acquire(Priority.SUBMIT)
    stats = quota.stats()
    await quota.acquire(Priority.SUBMIT)
    assert stats.admitted[Priority.SUBMIT] == 1
    assert (stats.rpm, stats.effective_rpm, stats.paused_until) == (120, 120, None)
    assert stats.burst == 1.5  # 2, less what drains in the quarter second held back
    assert repr(quota) == "<RequestQuota rpm=120/120 waiting=0 paused=0.0s>"
