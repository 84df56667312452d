"""Assistants runs (legacy) over real HTTP with the real SDK: threads, runs, tool rounds."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.beta import FunctionToolParam
from openai.types.beta.threads import Run

from ..helpers import StartSim, sdk

pytestmark = pytest.mark.filterwarnings(
    "ignore:The Assistants API is deprecated:DeprecationWarning"
)

FAST = {"lifecycle": {"queued": 0.2, "in_progress": 1.0, "resume": 0.5}}
TOOLS = {**FAST, "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 2}}


async def until(client: AsyncOpenAI, run: Run, statuses: set[str], step: float = 0.005) -> Run:
    for _ in range(2000):
        if run.status in statuses:
            return run
        await asyncio.sleep(step)
        run = await client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    raise AssertionError(f"{run.id} stuck in {run.status}")


NEEDS = {"requires_action", "completed", "failed", "cancelled", "expired", "incomplete"}


async def test_thread_message_run_and_reply(start_sim: StartSim, http: str) -> None:
    slow = {"lifecycle": {"queued": 1.0, "in_progress": 30.0}}  # 150 ms real: time to look
    async with start_sim(slow, time_scale=0.005) as sim, sdk(sim, http) as client:
        thread = await client.beta.threads.create()
        assert thread.id.startswith("thread_")
        await client.beta.threads.messages.create(thread.id, role="user", content="Hi there")
        run = await client.beta.threads.runs.create(thread.id, assistant_id="asst_abc")
        assert run.status == "queued"
        assert run.id.startswith("run_")
        assert run.expires_at == run.created_at + 600
        # no reply before the run completes
        early = await client.beta.threads.messages.list(thread.id)
        assert [m.role for m in early.data] == ["user"]
        run = await until(client, run, NEEDS)
        assert run.status == "completed"
        assert run.completed_at is not None
        assert run.expires_at is None
        msgs = await client.beta.threads.messages.list(thread.id)
        assert [m.role for m in msgs.data] == ["assistant", "user"]  # newest first
        reply = msgs.data[0]
        assert reply.run_id == run.id
        assert reply.assistant_id == "asst_abc"
        assert reply.content[0].type == "text"
        assert "Hi there" in reply.content[0].text.value
        only = await client.beta.threads.messages.list(thread.id, run_id=run.id, limit=1)
        assert [m.id for m in only.data] == [reply.id]
        asc = await client.beta.threads.messages.list(thread.id, order="asc", limit=1)
        assert asc.data[0].role == "user"
        assert asc.has_more


async def test_create_and_run_is_one_request(start_sim: StartSim) -> None:
    async with start_sim(FAST, time_scale=0.005) as sim, sdk(sim) as client:
        run = await client.beta.threads.create_and_run(
            assistant_id="asst_1", thread={"messages": [{"role": "user", "content": "2+2?"}]}
        )
        run = await until(client, run, NEEDS)
        assert run.status == "completed"
    assert sim.stats()["requests"]["threads.create_and_run"] == 1


async def test_tool_rounds_then_completion(start_sim: StartSim) -> None:
    async with start_sim(TOOLS, time_scale=0.005) as sim, sdk(sim) as client:
        tools: list[FunctionToolParam] = [
            {"type": "function", "function": {"name": "lookup", "parameters": {}}}
        ]
        run = await client.beta.threads.create_and_run(
            assistant_id="asst_1",
            thread={"messages": [{"role": "user", "content": "go"}]},
            tools=tools,
        )
        rounds = 0
        while (run := await until(client, run, NEEDS)).status == "requires_action":
            rounds += 1
            assert run.required_action is not None
            calls = run.required_action.submit_tool_outputs.tool_calls
            assert len(calls) == 2
            assert {c.function.name for c in calls} == {"lookup"}
            run = await client.beta.threads.runs.submit_tool_outputs(
                run.id,
                thread_id=run.thread_id,
                tool_outputs=[{"tool_call_id": c.id, "output": "42"} for c in calls],
            )
        assert rounds == 2
        assert run.status == "completed"


async def test_tool_outputs_must_match_the_pending_calls(start_sim: StartSim) -> None:
    slow = {**TOOLS, "lifecycle": {"queued": 10.0, "in_progress": 10.0}}  # 100 ms to look
    async with start_sim(slow, time_scale=0.005) as sim, sdk(sim) as client:
        run = await client.beta.threads.create_and_run(assistant_id="asst_1")
        with pytest.raises(openai.BadRequestError, match="do not accept tool outputs"):
            await client.beta.threads.runs.submit_tool_outputs(
                run.id, thread_id=run.thread_id, tool_outputs=[{"tool_call_id": "x", "output": "y"}]
            )
        run = await until(client, run, NEEDS)
        assert run.required_action is not None
        calls = run.required_action.submit_tool_outputs.tool_calls
        with pytest.raises(openai.BadRequestError, match="Invalid tool_call_id"):
            await client.beta.threads.runs.submit_tool_outputs(
                run.id,
                thread_id=run.thread_id,
                tool_outputs=[{"tool_call_id": "call_x", "output": "y"}],
            )
        with pytest.raises(openai.BadRequestError, match="Expected tool outputs"):
            await client.beta.threads.runs.submit_tool_outputs(
                run.id,
                thread_id=run.thread_id,
                tool_outputs=[{"tool_call_id": calls[0].id, "output": "y"}],
            )


async def test_still_requires_action_after_submit_and_second_submit_refused(
    start_sim: StartSim,
) -> None:
    scenario = {**TOOLS, "tools": {**TOOLS["tools"], "submit_lag": 50.0}}
    async with start_sim(scenario, time_scale=0.005) as sim, sdk(sim) as client:
        run = await until(client, await client.beta.threads.create_and_run(assistant_id="a"), NEEDS)
        assert run.required_action is not None
        calls = run.required_action.submit_tool_outputs.tool_calls
        outputs = [{"tool_call_id": c.id, "output": "ok"} for c in calls]
        after = await client.beta.threads.runs.submit_tool_outputs(
            run.id,
            thread_id=run.thread_id,
            tool_outputs=outputs,  # type: ignore[arg-type]
        )
        assert after.status == "requires_action"
        assert after.required_action is not None
        assert [c.id for c in after.required_action.submit_tool_outputs.tool_calls] == [
            c.id for c in calls
        ]
        with pytest.raises(openai.BadRequestError, match="already submitted"):
            await client.beta.threads.runs.submit_tool_outputs(
                run.id,
                thread_id=run.thread_id,
                tool_outputs=outputs,  # type: ignore[arg-type]
            )


async def test_one_active_run_per_thread(start_sim: StartSim) -> None:
    async with start_sim(FAST, time_scale=1.0) as sim, sdk(sim) as client:
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "a"}])
        await client.beta.threads.runs.create(thread.id, assistant_id="asst_1")
        with pytest.raises(openai.BadRequestError, match="already has an active run"):
            await client.beta.threads.runs.create(thread.id, assistant_id="asst_1")
        with pytest.raises(openai.BadRequestError, match="while a run"):
            await client.beta.threads.messages.create(thread.id, role="user", content="b")


async def test_unanswered_requires_action_expires(start_sim: StartSim) -> None:
    # requires_action from 1.2 s to 20 s: 190 ms of real time to see it, even on a busy machine
    scenario = {**TOOLS, "lifecycle": {**FAST["lifecycle"], "expires_after": 20}}
    async with start_sim(scenario, time_scale=0.01) as sim, sdk(sim) as client:
        run = await until(client, await client.beta.threads.create_and_run(assistant_id="a"), NEEDS)
        assert run.status == "requires_action"
        run = await until(client, run, {"expired"})
        assert run.expires_at is None
        assert run.required_action is None


async def test_cancel_goes_through_cancelling(start_sim: StartSim) -> None:
    scenario = {"lifecycle": {"queued": 100.0, "cancel_delay": 1.0}}
    async with start_sim(scenario, time_scale=0.005) as sim, sdk(sim) as client:
        run = await client.beta.threads.create_and_run(assistant_id="a")
        cancelling = await client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)
        assert cancelling.status == "cancelling"
        done = await until(client, cancelling, {"cancelled"})
        assert done.cancelled_at is not None
        with pytest.raises(
            openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"
        ):
            await client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)


async def test_unknown_thread_and_run_are_404(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        with pytest.raises(openai.NotFoundError):
            await client.beta.threads.runs.retrieve("run_x", thread_id="thread_x")
        thread = await client.beta.threads.create()
        with pytest.raises(openai.NotFoundError):
            await client.beta.threads.runs.retrieve("run_x", thread_id=thread.id)
        with pytest.raises(openai.NotFoundError):
            await client.beta.threads.messages.list("thread_nope")


async def test_missing_assistant_id_is_a_400(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        thread = await client.beta.threads.create()
        with pytest.raises(openai.BadRequestError, match="assistant_id"):
            await client.beta.threads.runs.create(thread.id, assistant_id="")
