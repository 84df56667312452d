"""Responses background mode over real HTTP with the real SDK: lifecycle, tool rounds, cancel."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import FunctionToolParam, Response

from ..helpers import StartSim, sdk

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}


async def until_done(client: AsyncOpenAI, resp: Response, step: float = 0.005) -> Response:
    """Poll tightly: the point here is the server's behaviour, not a polling strategy."""
    for _ in range(2000):
        if resp.status not in ("queued", "in_progress"):
            return resp
        await asyncio.sleep(step)
        resp = await client.responses.retrieve(resp.id)
    raise AssertionError(f"{resp.id} never finished")


async def test_background_response_is_queued_then_completes(start_sim: StartSim, http: str) -> None:
    async with start_sim("ample", time_scale=0.002) as sim, sdk(sim, http) as client:
        resp = await client.responses.create(
            model="gpt-5-mini", input="What is 2+2?", background=True
        )
        assert resp.status == "queued"
        assert resp.id.startswith("resp_")
        assert len(resp.id) == 55
        assert resp.output == []
        done = await until_done(client, resp)
        assert done.status == "completed"
        assert "What is 2+2?" in done.output_text
        assert done.usage is not None
        assert done.usage.total_tokens > 0
        assert done.completed_at is not None
        assert done.completed_at >= done.created_at
    stats = sim.stats()
    assert stats["requests"]["responses.create"] == 1
    assert stats["responses"]["detection"]["count"] == 1
    (item,) = sim.stats(per_run=True)["responses"]["items"]
    assert item["retrieves"] == len(item["polled"]) >= 1  # each retrieve's age, for benchmarks
    assert item["polled"] == sorted(item["polled"])
    assert item["polled"][-1] >= item["seconds"]  # the last one saw it done


async def test_store_false_with_background_is_refused(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(model="m", input="x", background=True, store=False)
        assert info.value.body["param"] == "store"  # type: ignore[index]


async def test_missing_model_is_a_400(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        with pytest.raises(openai.BadRequestError, match="model"):
            await client.responses.create(input="x", background=True)


async def test_tool_rounds_chain_by_previous_response_id(start_sim: StartSim) -> None:
    scenario = {
        "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 2},
        "lifecycle": {"queued": 0.1, "in_progress": 1.0, "resume": 0.5},
    }
    async with start_sim(scenario, time_scale=0.005) as sim, sdk(sim) as client:
        resp = await client.responses.create(
            model="m", input="Weather?", background=True, tools=[WEATHER]
        )
        rounds = 0
        resp = await until_done(client, resp)
        while calls := [o for o in resp.output if o.type == "function_call"]:
            rounds += 1
            assert resp.status == "completed"
            assert len(calls) == 2
            for call in calls:
                assert call.name == "get_weather"
                args = json.loads(call.arguments)
                assert isinstance(args["city"], str)
                assert isinstance(args["days"], int)
            follow = await client.responses.create(
                model="m",
                background=True,
                previous_response_id=resp.id,
                tools=[WEATHER],
                input=[
                    {"type": "function_call_output", "call_id": c.call_id, "output": "sunny"}
                    for c in calls
                ],
            )
            assert follow.id != resp.id
            assert follow.previous_response_id == resp.id
            resp = await until_done(client, follow)
        assert rounds == 2
        assert resp.status == "completed"
        assert resp.output_text


async def test_follow_up_with_unknown_or_missing_call_ids_is_a_400(start_sim: StartSim) -> None:
    scenario = {"tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 2}}
    async with start_sim(scenario, time_scale=0.0005) as sim, sdk(sim) as client:
        first = await until_done(
            client, await client.responses.create(model="m", input="x", background=True)
        )
        calls = [o for o in first.output if o.type == "function_call"]
        assert len(calls) == 2
        with pytest.raises(openai.BadRequestError, match="No tool call found"):
            await client.responses.create(
                model="m",
                background=True,
                previous_response_id=first.id,
                input=[{"type": "function_call_output", "call_id": "call_bogus", "output": "x"}],
            )
        with pytest.raises(openai.BadRequestError, match="No tool output found"):
            await client.responses.create(
                model="m",
                background=True,
                previous_response_id=first.id,
                input=[
                    {"type": "function_call_output", "call_id": calls[0].call_id, "output": "x"}
                ],
            )
        with pytest.raises(openai.BadRequestError, match="id 'resp_nope' not found"):
            await client.responses.create(
                model="m", background=True, previous_response_id="resp_nope", input="x"
            )


async def test_cancel_is_idempotent_and_final(start_sim: StartSim) -> None:
    async with start_sim("ample", time_scale=1.0) as sim, sdk(sim) as client:
        resp = await client.responses.create(model="m", input="x", background=True)
        first = await client.responses.cancel(resp.id)
        again = await client.responses.cancel(resp.id)
        assert first.status == again.status == "cancelled"
        assert (await client.responses.retrieve(resp.id)).status == "cancelled"


async def test_foreground_response_cannot_be_cancelled(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        resp = await client.responses.create(model="m", input="x")
        assert resp.status == "completed"
        with pytest.raises(openai.BadRequestError, match="background"):
            await client.responses.cancel(resp.id)


async def test_unknown_response_is_a_404(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        with pytest.raises(openai.NotFoundError, match="resp_missing"):
            await client.responses.retrieve("resp_missing")


async def test_response_is_gone_after_its_ttl(start_sim: StartSim) -> None:
    scenario = {"lifecycle": {"response_ttl": 5, "queued": 0.1, "in_progress": 0.1}}
    async with start_sim(scenario, time_scale=0.01) as sim, sdk(sim) as client:
        resp = await client.responses.create(model="m", input="x", background=True)
        await asyncio.sleep(0.08)  # scenario time runs 100x: 8 s, past the 5 s TTL
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(resp.id)


@pytest.mark.parametrize(
    ("failed", "status"), [({"failed": 1.0}, "failed"), ({"incomplete": 1.0}, "incomplete")]
)
async def test_failure_and_incomplete_carry_details(
    start_sim: StartSim, failed: dict[str, float], status: str
) -> None:
    scenario = {"outcomes": {**failed, "rate_limit_share": 0.0}}
    async with start_sim(scenario, time_scale=0.0005) as sim, sdk(sim) as client:
        resp = await until_done(
            client, await client.responses.create(model="m", input="x", background=True)
        )
        assert resp.status == status
        if status == "failed":
            assert resp.error is not None
            assert resp.error.code == "server_error"
        else:
            assert resp.incomplete_details is not None
            assert resp.incomplete_details.reason == "max_output_tokens"
