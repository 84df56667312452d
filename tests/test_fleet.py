"""The fleet against the simulator over real HTTP: both kinds, tools, failures, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

from runfleet import (
    AuthError,
    Fleet,
    FleetClosed,
    PollPolicy,
    ResponseSpec,
    RunCancelled,
    RunDetached,
    RunError,
    RunExpired,
    RunFailed,
    RunfleetError,
    RunHandle,
    RunNotFound,
    RunTimeout,
    ToolError,
    tool,
)
from runfleet.sim import SimServer

from .helpers import API_KEY, StartSim, fleet_on, sdk, start

KINDS = ["responses", "assistants"]
FAST = {"lifecycle": {"queued": 0.2, "in_progress": 2.0, "resume": 1.0}}


@tool
async def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """An order's state (a sync handler: it runs in a worker thread)."""
    return {"order": order_id, "state": "shipped"}


TOOLS = {
    **FAST,
    "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 2, "submit_lag": 0.5},
}


@pytest.mark.parametrize("kind", KINDS)
async def test_run_completes_with_text_raw_object_and_figures(
    start_sim: StartSim, http: str, kind: str
) -> None:
    async with start_sim(FAST) as sim, fleet_on(sim, http) as fleet:
        result = await (await start(fleet, kind, "What is 2+2?"))
    assert result.status == "completed"
    assert "What is 2+2?" in result.text
    assert result.raw.status == "completed"
    assert result.kind == kind
    figures = result.figures
    assert figures.polls >= 1
    assert figures.requests == figures.polls + 1 + (kind == "assistants")  # create, polls, fetch
    assert figures.total >= figures.queued >= 0
    assert figures.detection_latency >= 0
    stats = sim.stats()
    assert stats["requests_total"] == figures.requests  # nothing the fleet did went uncounted


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_rounds_are_answered_once_each(start_sim: StartSim, kind: str) -> None:
    async with start_sim(TOOLS) as sim, fleet_on(sim, tools=[get_weather]) as fleet:
        result = await (await start(fleet, kind, "Weather?", tools=_defs(kind)))
    assert result.status == "completed"
    assert len(result.tool_rounds) == 2
    for rnd in result.tool_rounds:
        assert len(rnd.calls) == len(rnd.outputs) == 2
        assert all(out.output.startswith("sunny in ") for out in rnd.outputs)
    stats = sim.stats()
    submits = stats["requests"].get("runs.submit_tool_outputs", 0)
    follow_ups = stats["requests"]["responses.create"] - 1 if kind == "responses" else 0
    assert submits + follow_ups == 2  # invariant 4: one submission per round, never twice
    assert stats["statuses"].get("400", 0) == 0
    if kind == "responses":
        assert len(result.response_ids) == 3
        assert result.id == result.response_ids[-1]


def _defs(kind: str) -> list[dict[str, Any]]:
    if kind == "responses":
        return []  # the fleet sends its registered tools with every request of the chain
    return [dict(get_weather.definition("assistants"))]


async def test_requires_action_shown_again_after_submission_is_not_answered_twice(
    start_sim: StartSim,
) -> None:
    """The Assistants run still shows the answered calls for a while: the fleet waits."""
    scenario = {**TOOLS, "tools": {**TOOLS["tools"], "rounds": 1, "submit_lag": 3.0}}
    async with start_sim(scenario) as sim, fleet_on(sim, tools=[get_weather]) as fleet:
        result = await fleet.run(assistant_id="asst_1", prompt="go")
    assert len(result.tool_rounds) == 1
    stats = sim.stats()
    assert stats["requests"]["runs.submit_tool_outputs"] == 1
    assert stats["statuses"].get("400", 0) == 0


async def test_sync_tool_runs_in_a_thread_without_blocking_the_loop(start_sim: StartSim) -> None:
    ticks = 0

    @tool
    def slow_lookup(order_id: str) -> str:
        time.sleep(0.3)  # blocking on purpose
        return "ok"

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    scenario = {**FAST, "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
    async with start_sim(scenario) as sim, fleet_on(sim, tools=[slow_lookup]) as fleet:
        task = asyncio.create_task(ticker())
        try:
            result = await fleet.respond(model="m", input="x")
        finally:
            task.cancel()
    assert result.tool_rounds[0].outputs[0].output == "ok"
    assert ticks >= 15  # the loop went on ticking while the handler slept 0.3 s


@pytest.mark.parametrize("kind", KINDS)
async def test_failed_run_raises_with_the_servers_error(start_sim: StartSim, kind: str) -> None:
    scenario = {**FAST, "outcomes": {"failed": 1.0, "rate_limit_share": 0.0}}
    async with start_sim(scenario) as sim, fleet_on(sim) as fleet:
        handle = await start(fleet, kind)
        with pytest.raises(RunFailed) as info:
            await handle
    assert info.value.code == "server_error"
    assert info.value.run_id == handle.id


@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_cancels_the_run_on_the_server(start_sim: StartSim, kind: str) -> None:
    scenario = {"lifecycle": {"queued": 0.1, "in_progress": 1000.0}}
    async with start_sim(scenario) as sim, fleet_on(sim) as fleet:
        handle = await start(fleet, kind, timeout=0.3)
        with pytest.raises(RunTimeout) as info:
            await handle
        # One word for this end everywhere: the error's outcome is what the stats count.
        assert fleet.stats().finished == {"timed_out": 1}
    assert isinstance(info.value, TimeoutError)
    assert info.value.outcome == "timed_out"
    stats = sim.stats()
    key = "responses" if kind == "responses" else "runs"
    assert stats[key]["by_status"] in ({"cancelled": 1}, {"cancelling": 1})


@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_handle(start_sim: StartSim, kind: str) -> None:
    scenario = {"lifecycle": {"queued": 0.1, "in_progress": 1000.0}}
    async with start_sim(scenario) as sim, fleet_on(sim) as fleet:
        handle = await start(fleet, kind)
        assert await handle.cancel("not needed")
        assert not await handle.cancel()
        with pytest.raises(RunCancelled, match="not needed"):
            await handle
    assert sim.stats()["requests"][f"{'responses' if kind == 'responses' else 'runs'}.cancel"] == 1


async def test_unanswered_run_expires(start_sim: StartSim) -> None:
    scenario = {
        "lifecycle": {"queued": 0.1, "in_progress": 1.0, "expires_after": 20.0},
        "tools": {"probability": 1.0, "rounds": 1},
    }

    @tool
    async def get_weather(city: str) -> str:
        await asyncio.sleep(0.6)  # with the first poll at 0.5 s: past expires_at (1 s real)
        return "late"

    async with start_sim(scenario, time_scale=0.05) as sim:
        async with fleet_on(sim, tools=[get_weather]) as fleet:
            defs = [dict(get_weather.definition("assistants"))]
            with pytest.raises(RunExpired, match="expired before its tool outputs arrived"):
                await fleet.run(assistant_id="asst_1", prompt="x", tools=defs)


async def test_tool_errors_reply_by_default_and_fail_by_policy(start_sim: StartSim) -> None:
    @tool
    async def get_weather(city: str) -> str:
        raise ValueError("no such city")

    scenario = {**FAST, "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
    async with start_sim(scenario) as sim:
        async with fleet_on(sim, tools=[get_weather]) as fleet:
            result = await fleet.respond(model="m", input="x")
        out = result.tool_rounds[0].outputs[0]
        assert out.output == "error: tool 'get_weather' raised ValueError: no such city"
        async with fleet_on(sim, tools=[get_weather], tool_errors="fail") as fleet:
            with pytest.raises(ToolError, match="no such city"):
                await fleet.respond(model="m", input="x")


async def test_unknown_tool_gets_an_error_output_the_model_reads(start_sim: StartSim) -> None:
    scenario = {**FAST, "tools": {"probability": 1.0, "rounds": 1, "names": ["nope"]}}
    async with start_sim(scenario) as sim, fleet_on(sim) as fleet:
        result = await fleet.respond(model="m", input="x")
    assert result.tool_rounds[0].outputs[0].output == "error: unknown tool 'nope'"


@pytest.mark.parametrize("kind", KINDS)
async def test_watch_attaches_to_a_run_created_elsewhere(start_sim: StartSim, kind: str) -> None:
    async with start_sim(FAST) as sim, sdk(sim) as client, fleet_on(sim) as fleet:
        if kind == "responses":
            resp = await client.responses.create(model="m", input="elsewhere", background=True)
            handle = fleet.watch(response_id=resp.id)
        else:
            run = await client.beta.threads.create_and_run(assistant_id="a")
            handle = fleet.watch(thread_id=run.thread_id, run_id=run.id)
        result = await handle
    assert result.status == "completed"
    assert result.figures.polls >= 1


async def test_watch_an_unknown_id_fails_that_run_only(start_sim: StartSim) -> None:
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        ok = await fleet.submit_response(model="m", input="x")
        with pytest.raises(RunNotFound):
            await fleet.watch(response_id="resp_nope")
        assert (await ok).status == "completed"


async def test_wrong_key_fails_every_waiter_with_the_keys_last_four(start_sim: StartSim) -> None:
    async with start_sim(FAST, api_key="sk-right-key-0000") as sim:
        with pytest.raises(AuthError, match=r"\.\.\.1234.*read when the client is created"):
            async with fleet_on(sim) as fleet:
                await fleet.respond(model="m", input="x")


async def test_quota_errors_and_faults_lose_no_run(start_sim: StartSim) -> None:
    scenario = {
        **FAST,
        "quota": {"rpm": 1200, "window": 1},
        "faults": {"error_500": 0.05, "error_503": 0.05, "drop": 0.03},
    }
    async with start_sim(scenario, time_scale=0.05) as sim:
        # A fleet that believes the quota is 3x what it is: it meets 429s and must recover.
        async with fleet_on(sim, rpm=3 * 1200 / 0.05) as fleet:
            handles = [await start(fleet, k) for k in KINDS * 15]
            outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
            stats = fleet.stats()
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert stats.finished == {"completed": 30}
    assert sim.stats()["faults"]  # faults did happen


async def test_stalled_run_is_recreated_once(start_sim: StartSim) -> None:
    scenario = {"stalls": {"probability": 1.0, "queued": 10_000}, **FAST}
    policy = PollPolicy(stall_unlearned=0.3)
    async with start_sim(scenario) as sim:
        async with fleet_on(sim, policy=policy, on_stall="recreate", timeout=1.5) as fleet:
            with capture_logs() as logs:
                with pytest.raises(RunTimeout):
                    await fleet.respond(model="m", input="x")
            stats = fleet.stats()
    events = [e["event"] for e in logs]
    assert events.count("run_recreated") == 1
    assert events.count("run_stalled") == 2  # the original and its replacement
    assert stats.stalled == 2
    assert sim.stats()["responses"]["by_status"] == {"cancelled": 2}


async def test_map_keeps_at_most_max_in_flight(start_sim: StartSim) -> None:
    specs = [ResponseSpec("m", f"q{i}") for i in range(20)]
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        seen = []
        async for handle in fleet.map(specs, max_in_flight=4):
            seen.append(handle.tag)
            assert sum(fleet.stats().in_flight.values()) <= 4
            assert (await handle).status == "completed"
    assert sorted(seen) == list(range(20))


async def test_map_yields_refused_specs_as_failed_handles(start_sim: StartSim) -> None:
    specs = [ResponseSpec("m", "ok"), ResponseSpec("", "no model")]
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        handles = [h async for h in fleet.map(specs)]
    errors = {h.tag: h.exception() for h in handles}
    assert errors[0] is None
    assert "refused to start (HTTP 400)" in str(errors[1])


@pytest.mark.parametrize("on_exit", ["cancel", "detach"])
async def test_shutdown_ends_every_waiter(start_sim: StartSim, on_exit: Any) -> None:
    scenario = {"lifecycle": {"queued": 0.1, "in_progress": 1000.0}}
    async with start_sim(scenario) as sim:
        async with fleet_on(sim, on_exit=on_exit) as fleet:
            handles = [await start(fleet, k) for k in KINDS * 3]
        for handle in handles:
            with pytest.raises(RunCancelled):
                await handle
            # A detached run is handed back, alive on the server: its error says so by type.
            assert isinstance(handle.exception(), RunDetached) == (on_exit == "detach")
    cancels = sum(v for k, v in sim.stats()["requests"].items() if k.endswith(".cancel"))
    assert cancels == (6 if on_exit == "cancel" else 0)


async def test_shutdown_by_cancellation_ends_every_waiter(start_sim: StartSim) -> None:
    scenario = {"lifecycle": {"queued": 0.1, "in_progress": 1000.0}}
    handles: list[RunHandle] = []

    async def use_fleet(sim: SimServer) -> None:
        async with asyncio.timeout(3.0), fleet_on(sim) as fleet:  # runs last 1,000 s
            handles.extend([await start(fleet, k) for k in KINDS])
            await asyncio.gather(*(h.result() for h in handles))

    async with start_sim(scenario) as sim:
        with pytest.raises(TimeoutError):
            await use_fleet(sim)
    assert handles
    assert all(h.done() for h in handles)
    assert all(isinstance(h.exception(), RunCancelled) for h in handles)


def test_bad_settings_are_refused() -> None:
    client = openai.AsyncOpenAI(api_key="sk-x", base_url="http://127.0.0.1:9/v1")
    for rpm in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rpm must be a positive number"):
            Fleet(client, rpm=rpm)
    with pytest.raises(ValueError, match="on_exit"):
        Fleet(client, rpm=60, on_exit="later")  # type: ignore[arg-type]


async def test_fleet_refuses_work_when_not_running() -> None:
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    fleet = Fleet(client, rpm=60)
    with pytest.raises(FleetClosed):
        await fleet.respond(model="m", input="x")
    with pytest.raises(ValueError, match="watch"):
        async with fleet:
            fleet.watch(thread_id="t")
    with pytest.raises(FleetClosed):
        fleet.watch(response_id="resp_1")
    await client.close()


async def test_client_is_copied_without_sdk_retries(start_sim: StartSim) -> None:
    async with start_sim(FAST) as sim, sdk(sim, max_retries=4) as client:
        async with Fleet(client, rpm=6000) as fleet:
            assert fleet._client.max_retries == 0
            await fleet.respond(model="m", input="x")
        assert client.max_retries == 4


async def test_logs_carry_events_and_never_the_key(start_sim: StartSim) -> None:
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        with capture_logs() as logs:
            await fleet.respond(model="m", input="x")
    assert any(e["event"] == "run_finished" and e["outcome"] == "completed" for e in logs)
    assert API_KEY not in repr(logs)
    assert API_KEY[-8:] not in repr(logs)


@pytest.mark.parametrize("kind", KINDS)
async def test_submissions_that_fail_are_answered_again(start_sim: StartSim, kind: str) -> None:
    """With no retries, a failed tool submission must not leave the run waiting forever."""
    scenario = {**TOOLS, "faults": {"error_503": 0.3}}
    async with start_sim(scenario) as sim:
        async with fleet_on(sim, tools=[get_weather], max_retries=0) as fleet:
            handles = []
            for _ in range(4):
                # a create refused by a 503 with retries off is not this test's point
                with contextlib.suppress(RunfleetError):
                    handles.append(await start(fleet, kind, "Weather?", tools=_defs(kind)))
            results = [await h for h in handles]
    assert handles
    assert all(len(r.tool_rounds) == 2 for r in results)
    assert sim.stats()["faults"]["error_503"] > 0


async def test_watched_response_chain_answers_its_tools(start_sim: StartSim) -> None:
    """A response created elsewhere that asks for tools continues with its own model."""
    scenario = {**FAST, "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
    async with start_sim(scenario) as sim, sdk(sim) as client:
        async with fleet_on(sim, tools=[get_weather]) as fleet:
            tools: Any = [dict(get_weather.definition("responses"))]
            resp = await client.responses.create(
                model="gpt-x", input="q", background=True, tools=tools
            )
            moves: list[str] = []
            result = await fleet.watch(
                response_id=resp.id,
                on_ids=lambda h: moves.append(f"creating after {h.id}" if h.creating else h.id),
            )
    assert len(result.tool_rounds) == 1
    assert result.raw.model == "gpt-x"
    # The intent first (a journal writes it before the create goes), then the new id, both
    # before the new response is polled.
    assert moves == [f"creating after {resp.id}", result.id]


async def test_ids_hook_sees_the_run_before_it_ends_and_errors_carry_figures(
    start_sim: StartSim,
) -> None:
    scenario = {**FAST, "outcomes": {"failed": 1.0}}
    seen: list[tuple[str, bool]] = []
    async with start_sim(scenario) as sim, fleet_on(sim) as fleet:
        handle = await fleet.submit(
            ResponseSpec("m", "x"), on_ids=lambda h: seen.append((h.id, h.done()))
        )
        with pytest.raises(RunFailed) as info:
            await handle
    assert seen == [(handle.id, False)]
    assert info.value.figures is not None
    assert info.value.figures.polls >= 1


async def test_map_sends_its_creates_concurrently(start_sim: StartSim) -> None:
    """With slow creates, every create is out before the first run can end."""
    scenario = {
        "lifecycle": {"queued": 0.1, "in_progress": 0.5},
        "faults": {"slow": 1.0, "slow_delay": 0.3},
    }
    specs = [ResponseSpec("m", f"q{i}") for i in range(12)]
    async with start_sim(scenario, time_scale=1.0) as sim, fleet_on(sim) as fleet:
        creates_at_first = -1
        async for handle in fleet.map(specs, max_in_flight=12):
            if creates_at_first < 0:
                creates_at_first = sim.stats()["requests"]["responses.create"]
            assert handle.done()
    # One at a time, 0.3 s each, only 3 or 4 would be out when the first run ends.
    assert creates_at_first == 12


def test_tool_definitions_are_the_fleets_own_tools_in_either_wire_shape() -> None:
    client = openai.AsyncOpenAI(api_key="sk-x", base_url="http://127.0.0.1:9/v1")
    fleet = Fleet(client, rpm=60, tools=[get_weather])
    assert [d["name"] for d in fleet.tool_definitions("responses")] == ["get_weather"]
    (assistants,) = fleet.tool_definitions("assistants")
    assert assistants["function"]["name"] == "get_weather"


async def test_a_callers_raising_hooks_end_no_other_run_and_never_the_loop(
    start_sim: StartSim,
) -> None:
    """A done-callback that raises is logged; an ``on_ids`` hook that raises ends its own run
    (it was never journaled as its submitter wanted) and nothing else."""

    def bad_callback(handle: RunHandle) -> None:
        raise RuntimeError("caller's bug")

    def bad_hook(handle: RunHandle) -> None:
        raise RuntimeError("caller's hook")

    scenario = {**FAST, "outcomes": {"failed": 0.0}}
    with capture_logs() as logs:
        async with start_sim(scenario) as sim, fleet_on(sim) as fleet:
            first = await fleet.submit_response(model="m", input="a")
            first.add_done_callback(bad_callback)
            hooked = await fleet.submit(ResponseSpec("m", "b"), on_ids=bad_hook)
            healthy = await fleet.submit_response(model="m", input="c")
            assert (await first).text
            with pytest.raises(RunError, match="caller's hook"):
                await hooked
            assert (await healthy).text
            again = await fleet.respond(model="m", input="d")  # the loop still runs
    assert again.text
    failed = [e for e in logs if e["event"] == "done_callback_failed"]
    assert [e["run_id"] for e in failed] == [first.id]
