"""``Fleet.drain()``: a service's shutdown hook stops new work and ends every run it holds.

Against the simulator over real HTTP, its time scaled (0.01: a scenario second is 10 ms).
"""

from __future__ import annotations

from typing import Any

import anyio
import openai
import pytest

from runfleet import (
    Fleet,
    FleetClosed,
    PollPolicy,
    ResponseSpec,
    RunCancelled,
    RunDetached,
    RunHandle,
)

from .helpers import API_KEY, StartSim, fleet_on, start

# Runs of 0.1 to 10 s: a drain of 3 s sees some end and hands back or cancels the others.
MIXED = {
    "lifecycle": {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 10, "high": 1000}},
    "outcomes": {"failed": 0.0},
}
POLICY = PollPolicy().scaled(0.1)  # polls from 50 ms: a run that ends is seen within the drain


def cancels(stats: dict[str, Any]) -> int:
    return sum(v for k, v in stats["requests"].items() if k.endswith(".cancel"))


@pytest.mark.parametrize("kind", ["responses", "assistants"])
@pytest.mark.parametrize("then", ["detach", "cancel"])
async def test_drain_waits_for_runs_then_ends_the_rest_and_refuses_new_work(
    start_sim: StartSim, kind: str, then: Any
) -> None:
    async with start_sim(MIXED) as sim, fleet_on(sim, policy=POLICY) as fleet:
        handles = [await start(fleet, kind, f"q{i}") for i in range(16)]
        left = await fleet.drain(timeout=3.0, then=then)
        assert all(h.done() for h in handles)  # every handle resolved, none waits
        with pytest.raises(FleetClosed):
            await start(fleet, kind)
        with pytest.raises(FleetClosed):
            fleet.watch(response_id="resp_x")
        with pytest.raises(FleetClosed):
            async for _ in fleet.map([ResponseSpec("m", "late")]):
                pass
        stats = sim.stats()
    finished = [h for h in handles if h.exception() is None]
    ended = [h for h in handles if h.exception() is not None]
    assert finished, "none finished within the drain's timeout"
    assert ended, "every run finished: nothing was left to end"
    if then == "detach":
        assert left == len(ended)
    else:
        # A run left at the timeout may end on the server while its cancel is on the way (seen
        # once, on a fresh clone under load): the server's word wins, and it is a result.
        assert len(ended) <= left <= len(ended) + len(finished)
    assert {(await h).status for h in finished} == {"completed"}
    for handle in ended:
        error = handle.exception()
        assert isinstance(error, RunCancelled)
        # Handed back: alive on the server, ids good for watch. Cancelled: on the server too.
        assert isinstance(error, RunDetached) == (then == "detach")
    if then == "cancel":
        assert len(ended) <= cancels(stats) <= left  # one each, unless seen done first
    else:
        assert cancels(stats) == 0
    assert creates_of(stats, kind) == 16  # nothing started after the drain began


def creates_of(stats: dict[str, Any], kind: str) -> int:
    name = "responses.create" if kind == "responses" else "threads.create_and_run"
    return int(stats["requests"].get(name, 0))


async def test_drain_during_map_stops_feeding_and_the_map_ends(start_sim: StartSim) -> None:
    specs = [ResponseSpec("m", f"q{i}") for i in range(40)]
    seen: list[RunHandle] = []
    async with start_sim(MIXED) as sim, fleet_on(sim, policy=POLICY) as fleet:
        mapped = anyio.Event()

        async def consume() -> None:
            async for handle in fleet.map(specs, max_in_flight=5):
                seen.append(handle)
            mapped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            left = await fleet.drain(timeout=1.0)
            with anyio.fail_after(5):
                await mapped.wait()  # the map ended: it pulls nothing once the fleet drains
        stats = sim.stats()
    assert stats["requests"]["responses.create"] < 40
    assert len(seen) == stats["requests"]["responses.create"]  # every run started was yielded
    assert all(h.done() for h in seen)
    assert sum(isinstance(h.exception(), RunDetached) for h in seen) == left


async def test_a_misused_drain_changes_nothing(start_sim: StartSim) -> None:
    async with start_sim(MIXED) as sim, fleet_on(sim, policy=POLICY) as fleet:
        with pytest.raises(ValueError, match="then must be"):
            await fleet.drain(timeout=1.0, then="later")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be"):
            await fleet.drain(timeout=-1.0)
        handle = await start(fleet, "responses")  # still open for work
        assert await fleet.drain(timeout=None) == 0  # None: as long as the runs take
        assert (await handle).status == "completed"


async def test_drain_of_a_fleet_never_entered_is_refused() -> None:
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(FleetClosed):
        await Fleet(client, rpm=60).drain(timeout=1.0)
    await client.close()
