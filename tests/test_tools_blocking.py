"""An async tool that blocks the event loop is named once; the loop's lag shows in the stats.

Real time, not looptime: a blocked loop is a wall-clock fact, and a fake clock does not move
while ``time.sleep`` holds the loop. The blocks are 0.3 s, three times the threshold.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from runfleet import FleetStats, PollPolicy, tool
from runfleet.tools import ToolCall, ToolRegistry

from .helpers import StartSim, fleet_on

FAST = {"lifecycle": {"queued": 0.2, "in_progress": 2.0, "resume": 1.0}}
TWO_ROUNDS = {**FAST, "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 1}}
BLOCK = 0.3
SCALED = PollPolicy().scaled(0.01)  # polls paced for the simulator's time_scale


@tool
async def sleepy_lookup(order_id: str) -> str:
    """An async handler that blocks the loop: the mistake under test."""
    time.sleep(BLOCK)  # noqa: ASYNC251 - blocking on purpose
    return "found"


@tool
async def polite_lookup(order_id: str) -> str:
    """An async handler that waits without holding the loop."""
    await anyio.sleep(BLOCK)
    return "found"


@tool
def threaded_lookup(order_id: str) -> str:
    """A sync handler that blocks its worker thread, never the loop."""
    time.sleep(BLOCK)
    return "found"


async def two_rounds(
    start_sim: StartSim, handler: Any
) -> tuple[FleetStats, list[MutableMapping[str, Any]]]:
    """Answer a run's two rounds of one call with ``handler``; return its stats and warnings."""
    with capture_logs() as logs:
        async with (
            start_sim(TWO_ROUNDS) as sim,
            fleet_on(sim, tools=[handler], policy=SCALED) as fleet,
        ):
            result = await fleet.respond(model="m", input="x")
            stats = fleet.stats()
    assert [o.output for r in result.tool_rounds for o in r.outputs] == ["found", "found"]
    return stats, [entry for entry in logs if entry["event"] == "tool_blocks_loop"]


async def test_a_blocking_async_tool_is_named_once_and_its_block_is_counted(
    start_sim: StartSim,
) -> None:
    """Two calls block the loop: one warning naming the tool, both blocks in the stats."""
    stats, [warning] = await two_rounds(start_sim, sleepy_lookup)
    assert warning["tool"] == "sleepy_lookup"
    assert warning["log_level"] == "warning"
    assert warning["blocked_for"] >= BLOCK
    assert "anyio.to_thread.run_sync" in warning["advice"]
    assert "plain `def`" in warning["advice"]
    assert stats.tool_blocks == {"sleepy_lookup": 2}
    assert stats.loop_lag_max >= BLOCK


@pytest.mark.parametrize("handler", [polite_lookup, threaded_lookup], ids=["async", "sync"])
async def test_tools_that_wait_without_holding_the_loop_raise_no_warning(
    start_sim: StartSim, handler: Any
) -> None:
    stats, warnings = await two_rounds(start_sim, handler)
    assert warnings == []
    assert stats.tool_blocks == {}


async def test_the_heartbeat_sees_a_loop_blocked_outside_any_tool(start_sim: StartSim) -> None:
    """Whoever holds the loop, the fleet's heartbeat wakes late by about as long."""
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        assert fleet.stats().loop_lag_p95 is None  # no beat yet
        await asyncio.sleep(0.3)  # a beat or two, on time
        time.sleep(0.6)  # noqa: ASYNC251 - the block under test, between two beats
        await asyncio.sleep(0.05)  # the late beat runs
        stats = fleet.stats()
        assert re.search(r" loop_lag_max=\d+\.\d\ds>$", repr(fleet))
    # A block that starts mid-interval is seen from the beat's due time on: at most one
    # interval (0.25 s) short.
    assert stats.loop_lag_max >= 0.6 - 0.25
    assert stats.loop_lag_p95 is not None
    assert stats.tool_blocks == {}


async def test_a_timed_handler_gets_values_exceptions_and_cancellation_as_await_would() -> None:
    """The stepping wrapper passes results, exceptions and cancellation through unchanged."""
    blocked: list[tuple[str, float]] = []

    async def echo(text: str) -> str:
        await asyncio.sleep(0)  # a bare yield
        await anyio.sleep(0.01)  # a future
        return text

    async def fail() -> str:
        await anyio.lowlevel.checkpoint()
        raise LookupError("nope")

    cleaned_up = False

    async def hang() -> str:
        nonlocal cleaned_up
        try:
            await anyio.sleep(10)
        finally:
            cleaned_up = True
        return "woke"

    registry = ToolRegistry(
        [echo, fail, tool(timeout=0.05)(hang)], on_block=lambda *block: blocked.append(block)
    )
    calls = [ToolCall("c1", "echo", '{"text": "hi"}'), ToolCall("c2", "fail", "{}")]
    outputs = await registry.run_round([*calls, ToolCall("c3", "hang", "{}")])
    assert [o.output for o in outputs] == [
        "hi",
        "error: tool 'fail' raised LookupError: nope",
        "error: tool 'hang' timed out after 0.05 s",
    ]
    assert cleaned_up
    assert blocked == []
