"""The shared store's Lua logic against a real Redis, on a clock the test drives.

Each :class:`RedisLimits` here stands for one process; the script's ``now`` comes from the
test (``redis_time``) so waits are exact numbers. The failure policies run on the real clock
against a Redis the test stops and starts again.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aredis
from openai import AsyncOpenAI
from structlog.testing import capture_logs

from runfleet import Fleet, RedisLimits, RedisUnavailable, RequestQuota
from runfleet.admission.bucket import Rate
from runfleet.admission.quota import Priority

from .helpers import API_KEY, StartSim, fleet_on, start
from .redis_server import RedisServer

RATE = Rate(rpm=600, capacity=10)  # 10 at once, then (600 - 10) / 60 a second


class Clock:
    """The time the script is told (seconds); starts far from zero like Redis TIME."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@asynccontextmanager
async def stores(
    url: str, n: int, time: Callable[[], float] | None, **kwargs: object
) -> AsyncIterator[list[RedisLimits]]:
    """``n`` stores on one account: n processes' views of it."""
    made = [RedisLimits(url, account="acct", redis_time=time, **kwargs) for _ in range(n)]  # type: ignore[arg-type]
    for store in made:
        store.bind(600, None)
    try:
        yield made
    finally:
        for store in made:
            await store.aclose()


async def test_processes_fill_one_bucket(redis_url: str, clock: Clock) -> None:
    async with stores(redis_url, 2, clock) as (a, b):
        waits = [await s.reserve(0, RATE) for s in (a, b) * 5]
        assert waits == [0.0] * 10
        assert await b.reserve(0, RATE) == pytest.approx(1 / RATE.per_second)
        clock.now += 1 / RATE.per_second
        assert await a.reserve(0, RATE) == 0.0


async def test_no_window_holds_more_than_the_quota(redis_url: str, clock: Clock) -> None:
    """Three processes asking in turn for 3 minutes: ≤ rpm in any 60 s, ≤ cap + rate in 1 s."""
    admitted: list[float] = []
    async with stores(redis_url, 3, clock) as group:
        turn = 0
        while clock.now < 1_180.0:
            wait = await group[turn % 3].reserve(0, RATE)
            turn += 1
            if wait == 0.0:
                admitted.append(clock.now)
            else:
                clock.now += wait
    for window, bound in ((60.0, 600), (1.0, RATE.capacity + RATE.per_second)):
        start = 0
        for end, t in enumerate(admitted):
            while admitted[start] <= t - window:
                start += 1
            assert end - start + 1 <= bound + 1e-9
    assert len(admitted) > 1_700  # and the quota was spent, not starved


async def test_tokens_given_back_return_to_the_shared_bucket(redis_url: str, clock: Clock) -> None:
    async with stores(redis_url, 2, clock) as (a, b):
        assert await a.reserve_tokens(100, 6_000) == 0.0  # one second's share: 100
        wait = await b.reserve_tokens(50, 6_000)
        assert wait == pytest.approx(50 / (5_900 / 60))
        a.give_back(60)  # reconciliation: the run used 40
        await a.flush()
        assert await b.reserve_tokens(50, 6_000) == 0.0


async def test_a_token_request_larger_than_the_bucket_waits_for_it_empty(
    redis_url: str, clock: Clock
) -> None:
    async with stores(redis_url, 1, clock) as (a,):
        assert await a.reserve_tokens(30, 6_000) == 0.0
        assert await a.reserve_tokens(500, 6_000) == pytest.approx(30 / (5_900 / 60))
        clock.now += 1.0
        assert await a.reserve_tokens(500, 6_000) == 0.0  # in debt now: the next one waits long
        assert await a.reserve_tokens(1, 6_000) == pytest.approx(401 / (5_900 / 60))


async def test_a_pause_seen_by_one_process_pauses_the_others(redis_url: str, clock: Clock) -> None:
    async with stores(redis_url, 2, clock) as (a, b):
        a.paused("requests", 5.0)
        await a.flush()
        clock.now += 1.0
        assert await b.reserve(0, RATE) == pytest.approx(4.0)
        clock.now += 4.0
        # Lifted: the bucket counts as full at the pause's end, so the others resume one
        # drain step apart instead of all at once.
        assert await b.reserve(0, RATE) == pytest.approx(1 / RATE.per_second)
        assert await b.reserve_tokens(10, 6_000) == 0.0  # a requests 429 leaves tokens alone


async def test_the_smallest_rpm_wins_and_a_warning_says_so(redis_url: str, clock: Clock) -> None:
    async with stores(redis_url, 2, clock) as (a, b):
        b.bind(1_200, None)
        fast = Rate(rpm=1_200, capacity=20)
        await a.reserve(0, RATE)
        with capture_logs() as logs:
            await b.reserve(0, fast)
        assert b.stats().rpm_in_force == 600
        assert [e["smallest"] for e in logs if e["event"] == "shared_rpm_differs"] == [600]
        # The slower process stops: three missed heartbeats later it no longer counts.
        clock.now += 7.0
        await b.reserve(0, fast)
        assert b.stats().rpm_in_force == 1_200
        assert b.stats().members == 1


async def test_a_limit_learned_by_one_process_binds_all(redis_url: str, clock: Clock) -> None:
    async with stores(redis_url, 2, clock) as (a, b):
        a.learned(300.0, None)
        await a.flush()
        await b.reserve(0, RATE)
        assert b.stats().rpm_in_force == 300


async def only_member(client: aredis.Redis) -> str:
    """The one process alive on the account, as the heartbeats name it."""
    (member,) = await client.zrange("runfleet:{acct}:members", 0, -1)
    assert isinstance(member, str)  # the client decodes
    return member


@pytest.mark.parametrize(
    ("lag", "at_once", "drain"),
    [(0.5, 5, (600 - 5) / 60.5), (1.0, 1, (10 - 1) / 1.0)],
    ids=["capacity", "then-rate"],
)
async def test_the_slowest_round_trip_widens_everyones_delay_allowance(
    redis_url: str, clock: Clock, lag: float, at_once: int, drain: float
) -> None:
    """A member whose round trips take ``lag`` (p99): the burst gives up what drains meanwhile,
    then the drain slows, so that a burst sent ``lag`` late still fits the server's 10."""
    async with stores(redis_url, 2, clock) as (a, b):
        await a.reserve(0, RATE)  # a's heartbeat; then its round trips are said to be slow
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            member = await only_member(client)  # a's
            await client.hset("runfleet:{acct}:configured", f"{member}:lag", str(lag))
            await client.hset("runfleet:{acct}:limits", mapping={"r_level": 0})
        finally:
            await client.aclose()
        waits = [await b.reserve(0, RATE) for _ in range(at_once)]
        assert waits == [0.0] * at_once
        assert await b.reserve(0, RATE) == pytest.approx(1 / drain)
        assert b.stats().round_trip_allowance == lag


async def test_each_process_measures_its_round_trips_and_shares_their_p99(redis_url: str) -> None:
    async with stores(redis_url, 1, None, heartbeat=0.001) as (a,):
        for _ in range(5):
            await a.reserve(0, RATE)
            await anyio.sleep(0.002)  # past the heartbeat: each call beats
        stats = a.stats()
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            member = await only_member(client)
            lag = float(await client.hget("runfleet:{acct}:configured", f"{member}:lag") or 0)
        finally:
            await client.aclose()
    assert stats.calls == 5
    assert 0 < stats.round_trip_p50_us <= stats.round_trip_p99_us
    assert 0 < lag <= 1.0
    assert stats.round_trip_allowance == pytest.approx(lag)


async def test_keys_carry_the_account_as_a_hash_tag(redis_url: str, clock: Clock) -> None:
    async with stores(redis_url, 1, clock) as (a,):
        await a.reserve(0, RATE)
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(await client.keys("*"))
        assert 0 < await client.ttl("runfleet:{acct}:limits") <= 3600
    finally:
        await client.aclose()
    assert keys == [
        "runfleet:{acct}:configured",
        "runfleet:{acct}:limits",
        "runfleet:{acct}:members",
    ]


def test_bad_settings_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="redis must be a redis://"):
        RedisLimits("http://user:secret@cache:6379", account="a")
    with pytest.raises(ValueError, match="on_failure"):
        RedisLimits("redis://cache", account="a", on_failure="hope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="account"):
        RedisLimits("redis://cache", account="")


async def test_an_unreachable_redis_fails_the_first_admission_whatever_the_policy() -> None:
    store = RedisLimits("redis://:hunter2@127.0.0.1:1/0", account="a", on_failure="local_fallback")
    with pytest.raises(RedisUnavailable) as caught:
        await store.reserve(0, RATE)
    await store.aclose()
    message = str(caught.value)
    assert "redis://127.0.0.1:1/0" in message
    assert "hunter2" not in message
    assert "\n" not in message


async def test_fail_closed_waits_for_redis_then_fails(redis_server: RedisServer) -> None:
    async with stores(redis_server.url, 1, None, max_outage=0.6, retry_every=0.1) as (a,):
        assert await a.reserve(0, RATE) == 0.0
        redis_server.stop()
        start = anyio.current_time()
        waits: list[float] = []

        async def admit_until_refused() -> None:
            while True:
                waits.append(await a.reserve(0, RATE))
                await anyio.sleep(waits[-1])

        with capture_logs() as logs, pytest.raises(RedisUnavailable, match="fail_closed"):
            await admit_until_refused()
        assert all(0 < wait <= 0.6 for wait in waits)
        assert 0.55 <= anyio.current_time() - start < 3.0
        assert [e["event"] for e in logs] == ["shared_limits_down"]
        assert a.stats().state == "down"
        redis_server.start()
        await anyio.sleep(0.15)  # past retry_every: the next call tries Redis again
        with capture_logs() as logs:
            assert await a.reserve(0, RATE) == 0.0
        assert [e["event"] for e in logs] == ["shared_limits_back"]


async def test_local_fallback_goes_on_at_its_share_and_hands_it_back(
    redis_server: RedisServer,
) -> None:
    async with stores(
        redis_server.url, 1, None, on_failure="local_fallback", processes=2, retry_every=0.1
    ) as (a,):
        assert await a.reserve(0, RATE) == 0.0
        redis_server.stop()
        # Alone, at half the account: a burst of 5 (10 / 2) and then a wait.
        waits = [await a.reserve(0, RATE) for _ in range(6)]
        assert waits[:5] == [0.0] * 5
        assert waits[5] > 0
        assert a.stats().state == "fallback"
        assert a.stats().fallback_admissions == 5
        redis_server.start()  # empty: no persistence
        await anyio.sleep(a.retry_every)
        await a.reserve(0, RATE)
        assert a.stats().state == "shared"
    client = aredis.Redis.from_url(redis_server.url)
    try:
        level = float(await client.hget("runfleet:{acct}:limits", "r_level") or 0)
    finally:
        await client.aclose()
    # What was admitted alone was carried into the new Redis (less what drained meanwhile).
    assert level > 2


async def test_a_429_in_one_quota_pauses_a_quota_in_another_process(redis_url: str) -> None:
    """Two quotas as two processes would build them; the 429 travels through Redis."""
    a_store = RedisLimits(redis_url, account="acct")
    b_store = RedisLimits(redis_url, account="acct")
    a = RequestQuota(600, shared=a_store)
    b = RequestQuota(600, shared=b_store)
    try:
        await b.acquire(Priority.POLL)
        a.observe({"retry-after-ms": "400"}, status=429)
        await a.publish()
        start = anyio.current_time()
        await b.acquire(Priority.POLL)
        assert anyio.current_time() - start >= 0.3
        assert b.stats().rate_limited == 0  # b saw no 429 itself
    finally:
        await a.aclose()
        await b.aclose()


async def test_priorities_stay_local_while_the_reservation_is_shared(redis_url: str) -> None:
    """Another process holds the account's bucket empty; this one's submit still goes first."""
    rate = Rate(rpm=600, capacity=1)
    other = RedisLimits(redis_url, account="acct")
    shared = RedisLimits(redis_url, account="acct")
    here = RequestQuota(600, burst=1.5, delay_allowance=0.0, shared=shared)
    order: list[Priority] = []
    try:
        assert await other.reserve(0, rate) == 0.0  # the bucket is full for the next 0.05 s

        async def acquire(priority: Priority) -> None:
            await here.acquire(priority)
            order.append(priority)

        async with anyio.create_task_group() as tg:
            for priority in (Priority.POLL, Priority.CREATE, Priority.POLL, Priority.SUBMIT):
                tg.start_soon(acquire, priority)
                await anyio.lowlevel.checkpoint()
        assert order[0] == Priority.SUBMIT
    finally:
        await other.aclose()
        await here.aclose()
    assert math.isfinite(here.stats().shared.round_trip_us)  # type: ignore[union-attr]


async def test_a_fleet_given_a_redis_url_spends_the_shared_account(
    start_sim: StartSim, redis_url: str
) -> None:
    async with start_sim("ample") as sim, fleet_on(sim, redis=redis_url, account="team") as fleet:
        results = [await start(fleet, "responses") for _ in range(5)]
        for handle in results:
            await handle
        shared = fleet.stats().quota
    assert shared is not None
    assert shared.shared is not None
    assert shared.shared.account == "team"
    assert shared.shared.calls >= 10  # a create and at least one poll per run


def test_a_fleet_takes_redis_or_a_quota_not_both() -> None:
    client = AsyncOpenAI(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="redis cannot be set beside a shared quota"):
        Fleet(client, rpm=60, quota=RequestQuota(60), redis="redis://127.0.0.1:9/0")
    with pytest.raises(ValueError, match="account names what Redis shares"):
        Fleet(client, rpm=60, account="team")
