"""Webhooks end to end over real HTTP: the simulator signs, uvicorn serves the receiver.

Each test runs three servers' worth of real sockets on loopback: the simulator (API and
sender), the receiver under uvicorn, and the fleet's SDK client. Simulator time is scaled;
the fleet's safety-net poll is set far beyond each test's length unless a test is about it,
so "one retrieve per run" can only come from the events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from structlog.testing import capture_logs

from runfleet import Fleet, RunFailed, tool
from runfleet.sim import SimServer
from runfleet.sim.server import serve_asgi
from runfleet.webhooks import WebhookReceiver

from .helpers import StartSim, fleet_on, start

NEW = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NTY="
OLD = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LTAxMjM0NTY="
FAST = {"lifecycle": {"queued": 0.2, "in_progress": {"dist": "uniform", "low": 1, "high": 3}}}


@asynccontextmanager
async def pushed(
    start_sim: StartSim,
    scenario: dict[str, Any] | None = None,
    *,
    hooks: dict[str, Any] | None = None,
    receiver_secret: str = NEW,
    **fleet: Any,
) -> AsyncIterator[tuple[SimServer, Fleet, WebhookReceiver]]:
    """Yield a simulator that delivers to a uvicorn-served receiver bound to a webhook fleet."""
    fleet.setdefault("safety_poll", 60.0)
    async with start_sim({**FAST, **(scenario or {})}) as sim:
        async with fleet_on(sim, webhooks=True, **fleet) as f:
            receiver = WebhookReceiver(f, secret=receiver_secret)
            async with serve_asgi(receiver) as port:
                url = f"http://127.0.0.1:{port}/webhooks/openai"
                settings = {"url": url, "secret": NEW, **(hooks or {})}
                sim.reset(sim.app.scenario.replace(webhooks=settings))
                yield sim, f, receiver


async def run_all(fleet: Fleet, count: int, kind: str = "responses", **kw: Any) -> list[Any]:
    handles = [await start(fleet, kind, str(i), **kw) for i in range(count)]
    return [await h for h in handles]


async def test_each_run_is_retrieved_once_when_events_arrive(start_sim: StartSim) -> None:
    async with pushed(start_sim) as (sim, fleet, receiver):
        results = await run_all(fleet, 20)
    assert all(r.status == "completed" for r in results)
    assert [r.figures.polls for r in results] == [1] * 20  # the event's retrieve, nothing else
    assert sim.stats()["responses"]["retrieves"] == 20
    stats = receiver.stats()
    assert stats.accepted == stats.woke == 20
    assert stats.rejected == {}


async def test_assistants_runs_keep_polling_in_the_same_fleet(start_sim: StartSim) -> None:
    async with pushed(start_sim) as (_sim, fleet, receiver):
        responses = [await start(fleet, "responses", str(i)) for i in range(5)]
        runs = [await start(fleet, "assistants", str(i)) for i in range(5)]
        done = [await h for h in responses + runs]
    assert all(r.status == "completed" for r in done)
    assert all(r.figures.polls == 1 for r in done[:5])
    # No event exists for runs: the normal schedule finds them, long before a 48-72 s
    # safety-net poll would.
    assert all(r.figures.total < 5 for r in done[5:])
    assert receiver.stats().woke == 5


async def test_duplicates_and_reordering_change_a_run_once(start_sim: StartSim) -> None:
    hooks = {"duplicate": 1.0, "reorder": 0.5, "reorder_delay": 1.5}
    async with pushed(start_sim, hooks=hooks) as (sim, fleet, receiver):
        results = await run_all(fleet, 20)
        # Every duplicate was delivered before the sim's counters say so; wait on them.
        await _until(sim, "delivered", 40)
    assert [r.figures.polls for r in results] == [1] * 20
    stats = receiver.stats()
    assert stats.accepted == 20
    assert stats.duplicates == 20
    assert sim.stats()["responses"]["retrieves"] == 20


async def test_lost_events_cost_latency_never_a_run(start_sim: StartSim) -> None:
    """Every event is dropped: the safety-net poll (0.3 s here) finds every run all the same."""
    async with pushed(start_sim, hooks={"drop": 1.0}, safety_poll=0.3) as (sim, fleet, receiver):
        results = await run_all(fleet, 10)
    assert all(r.status == "completed" for r in results)
    assert receiver.stats().received == 0
    assert sim.stats()["webhooks"]["dropped"] == 10


@pytest.mark.parametrize("receiver_secret", [OLD, NEW], ids=["old-secret", "new-secret"])
async def test_rotation_window_verifies_with_either_secret(
    start_sim: StartSim, receiver_secret: str
) -> None:
    hooks = {"previous_secret": OLD}
    async with pushed(start_sim, hooks=hooks, receiver_secret=receiver_secret) as (
        _,
        fleet,
        receiver,
    ):
        results = await run_all(fleet, 5)
    assert [r.figures.polls for r in results] == [1] * 5
    assert receiver.stats().woke == 5


async def test_after_rotation_the_old_secret_is_refused(start_sim: StartSim) -> None:
    """A receiver left on the old secret refuses events once the window closes (400s),
    and its runs are still found, by the safety net."""
    hooks = {"previous_secret": OLD, "rotation_until": 0.0, "retries": 0}
    async with pushed(start_sim, hooks=hooks, receiver_secret=OLD, safety_poll=0.3) as (
        sim,
        fleet,
        receiver,
    ):
        results = await run_all(fleet, 3)
        await _until(sim, "failed", 3)
    assert all(r.status == "completed" for r in results)
    assert receiver.stats().rejected == {"signature": 3}
    assert sim.stats()["webhooks"]["answer_400"] == 3


@tool
async def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


async def test_a_tool_chain_is_woken_by_each_response_of_the_chain(start_sim: StartSim) -> None:
    scenario = {"tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 1}}
    async with pushed(start_sim, scenario, tools=[get_weather]) as (_sim, fleet, receiver):
        result = await fleet.respond(model="m", input="weather?")
    assert len(result.tool_rounds) == 2
    assert result.figures.polls == 3  # one per response of the chain, each after its event
    assert receiver.stats().woke == 3


async def test_failed_runs_are_woken_and_reported(start_sim: StartSim) -> None:
    async with pushed(start_sim, {"outcomes": {"failed": 1.0}}) as (_, fleet, receiver):
        handle = await start(fleet, "responses")
        with pytest.raises(RunFailed):
            await handle
    assert receiver.stats().woke == 1


async def test_unknown_response_ids_are_acknowledged(start_sim: StartSim) -> None:
    """Events for runs another process started: 200, logged, nothing woken."""
    async with pushed(start_sim) as (sim, _fleet, receiver):
        async with fleet_on(sim) as other:  # a second fleet, without a receiver
            await (await start(other, "responses"))
        await _until(sim, "delivered", 1)
    assert receiver.stats().unknown == 1
    assert sim.stats()["webhooks"]["answer_200"] == 1


async def test_a_ten_mib_body_is_refused_over_http(start_sim: StartSim) -> None:
    async with pushed(start_sim) as (_, _fleet, receiver):
        async with serve_asgi(receiver) as port, httpx2.AsyncClient() as http:
            answer = await http.post(
                f"http://127.0.0.1:{port}/",
                content=b"{" + b" " * (10 << 20) + b"}",
                headers={"content-type": "application/json"},
            )
    assert answer.status_code == 413
    assert receiver.stats().rejected == {"too_large": 1}


async def test_no_secret_reaches_the_logs(start_sim: StartSim) -> None:
    with capture_logs() as logs:
        async with pushed(start_sim, hooks={"previous_secret": OLD, "duplicate": 0.5}) as (
            _,
            fleet,
            _receiver,
        ):
            await run_all(fleet, 5)
    text = repr(logs)
    assert "webhook_received" in text
    for secret in (NEW, OLD):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text


def test_the_receiver_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValueError, match="OPENAI_WEBHOOK_SECRET"):
        WebhookReceiver(object())  # type: ignore[arg-type]


async def _until(sim: SimServer, key: str, count: int) -> None:
    """Wait (bounded) until the simulator's webhook counter ``key`` reaches ``count``."""
    with anyio.fail_after(10):
        await sim.app.webhooks.reached(key, count)
