"""The design's invariants, on a fake clock: the simulator in-process, looptime fast-forwarding.

The SDK reaches the simulator through ``httpx2.ASGITransport``, so no socket or thread holds
the loop and minutes of scenario time pass in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from structlog.testing import capture_logs
from structlog.typing import EventDict, WrappedLogger

from runfleet import Fleet, Priority, tool
from runfleet.sim import SimApp

from .helpers import API_KEY

pytestmark = pytest.mark.looptime


@asynccontextmanager
async def in_process(scenario: dict[str, Any], **fleet: Any) -> AsyncIterator[tuple[SimApp, Fleet]]:
    app = SimApp({"seed": 3, **scenario})
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    fleet.setdefault("seed", 11)
    async with client, Fleet(client, **fleet) as f:
        yield app, f


RUNS = {"lifecycle": {"queued": {"dist": "lognormal", "median": 1, "sigma": 0.5},
                      "in_progress": {"dist": "lognormal", "median": 8, "sigma": 0.5}}}  # fmt: skip


async def test_requests_in_any_60s_window_stay_under_the_quota() -> None:
    """Invariant 1: 150 runs want far more than 120 RPM; the quota holds, nothing is 429ed."""
    scenario = {**RUNS, "quota": {"rpm": 120, "window": 1}}
    async with in_process(scenario, rpm=120) as (app, fleet):
        handles = [await fleet.submit_response(model="m", input=str(i)) for i in range(150)]
        for handle in handles:
            await handle
        stats = fleet.stats()
    sim = app.snapshot()
    assert sim["peak_window"]["peak"] <= 120
    assert sim["rate_limited"] == 0
    assert sim["requests_total"] == stats.requests_total  # every request passed the gate
    assert sum(stats.finished.values()) == 150  # none lost: each ended one way or another
    assert sim["now"] > 150  # it took scenario minutes: the quota, not the runs, set the pace


async def test_idle_runs_cost_no_task() -> None:
    """Invariant 2: 200 waiting runs, a handful of tasks."""
    scenario = {"lifecycle": {"queued": 1, "in_progress": 600}}
    async with in_process(scenario, rpm=100_000, concurrency=8) as (_, fleet):
        handles = [await fleet.submit_response(model="m", input=str(i)) for i in range(200)]
        # Fake time: every run has been polled at least twice (10 scouts from 0.5 s on, the
        # others, with no run of their key seen done, from their fifth classic poll at 6.6 s).
        await asyncio.sleep(12)
        assert fleet.stats().requests["retrieve"] >= 400
        assert len(asyncio.all_tasks()) <= 8 + 4  # polls in flight, the loop, this test
        assert fleet.stats().in_flight == {"running": 200}  # each counted once, as it moved
        for handle in handles[:50]:
            await handle.cancel()
        assert fleet.stats().in_flight == {"running": 150}
        for handle in handles[50:]:
            await handle.cancel()
        assert fleet.stats().in_flight == {}


async def test_tool_outputs_go_before_waiting_polls() -> None:
    """Invariant 5: with the quota saturated by polls, submissions are not queued behind them."""
    seen: dict[str, float] = {}
    answered: dict[str, float] = {}

    def clock(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        now = asyncio.get_running_loop().time()
        if event["event"] == "run_status" and event.get("status") == "completed":
            seen.setdefault(event["run_id"], now)
        if event["event"] == "run_tools_answered":
            answered[event["previous"]] = now
        return event

    @tool
    async def get_weather(city: str) -> str:
        return "sunny"

    scenario = {
        **RUNS,
        "tools": {"probability": 0.3, "rounds": 1, "calls_per_round": 1},
        "quota": {"rpm": 60, "window": 1},
    }
    loop = asyncio.get_running_loop()
    async with in_process(scenario, rpm=60, tools=[get_weather]) as (_, fleet):
        start = loop.time()
        with capture_logs(processors=[clock]):
            handles = [await fleet.submit_response(model="m", input=str(i)) for i in range(80)]
            for handle in handles:
                await handle
        quota, seconds = fleet.quota.stats(), loop.time() - start
    delays = [answered[rid] - seen[rid] for rid in answered]
    assert len(delays) >= 10
    assert max(delays) <= 3.0  # a second or two at 1 request/s, whatever polls are waiting
    assert quota.admitted[Priority.SUBMIT] == len(delays)
    # Saturated throughout (one request a second), mostly by polls.
    assert sum(quota.admitted.values()) >= 0.9 * seconds
    assert quota.admitted[Priority.POLL] > sum(quota.admitted.values()) / 2


async def test_deadline_cancels_on_the_server() -> None:
    """Invariant 7: a run that would take an hour ends at its deadline, cancelled remotely."""
    scenario = {"lifecycle": {"queued": 1, "in_progress": 3600}}
    async with in_process(scenario, rpm=6000, timeout=120) as (app, fleet):
        handle = await fleet.submit_response(model="m", input="x")
        with pytest.raises(TimeoutError):
            await handle
        assert asyncio.get_running_loop().time() < 200
    assert app.snapshot()["responses"]["by_status"] == {"cancelled": 1}


async def test_429_storm_pauses_everyone_and_loses_nothing() -> None:
    scenario = {**RUNS, "faults": {"storms": {"every": 30, "duration": 5}}}
    async with in_process(scenario, rpm=6000) as (app, fleet):
        handles = [await fleet.submit_response(model="m", input=str(i)) for i in range(40)]
        outcomes = [await h.result() for h in handles]
        stats = fleet.stats()
    assert len(outcomes) == 40
    sim = app.snapshot()
    assert sim["storm_limited"] >= 1
    assert stats.rate_limited == sim["storm_limited"]
    # after the first 429 of a storm the fleet waits it out instead of hammering
    assert sim["storm_limited"] < 40


async def test_a_cohort_of_an_unlearned_key_is_polled_by_its_scouts() -> None:
    """100 runs of one model started together: 10 poll the classic way, the rest wait for them.

    Runs take 3 s. The classic loop would poll each at 0.5, 1.25, 2.4 and 4.1 s (400 polls);
    here the scouts do, and when they are seen done at 4.1 s every other run is polled at once,
    so each is seen no later than the classic loop would see it.
    """
    scenario = {"lifecycle": {"queued": 0, "in_progress": 3}}
    async with in_process(scenario, rpm=100_000) as (_, fleet):
        loop = asyncio.get_running_loop()
        start = loop.time()
        handles = [await fleet.submit_response(model="m", input=str(i)) for i in range(100)]
        results = [await handle for handle in handles]
        took = loop.time() - start
        stats = fleet.stats()
    assert stats.requests["retrieve"] <= 10 * 4 + 90 + 10
    assert took < 4.06 * 1.2 + 0.5  # the scouts' fourth poll, jitter included
    assert max(r.figures.polls for r in results) == 4
    assert sorted(r.figures.polls for r in results)[:90] == [1] * 90
