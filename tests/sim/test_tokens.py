"""Tokens per minute over real HTTP with the real SDK: headers, 429s, refunds, usage, stats."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import openai
import pytest
from openai.types.beta.threads import Run
from openai.types.responses import Response, ResponseUsage

from ..helpers import StartSim, sdk
from .test_assistants import until
from .test_responses import WEATHER, until_done

pytestmark = pytest.mark.filterwarnings(
    "ignore:The Assistants API is deprecated:DeprecationWarning"
)

# At time_scale 1 with a 60 s window the bucket refills 1/60 of itself per second: slow enough
# that a refund stands out from the refill while a run of 0.2 s completes.
QUICK = {"queued": 0.0, "in_progress": 0.2, "resume": 0.2}


def account(tpm: float, **tokens: Any) -> dict[str, Any]:
    """Return a scenario with a token limit, quick runs and a fixed real output of 100."""
    return {
        "quota": {"rpm": 6000, "tpm": tpm, "window": 60},
        "lifecycle": QUICK,
        "tokens": {"output": 100, **tokens},
    }


def remaining(raw: Any) -> int:
    return int(raw.headers["x-ratelimit-remaining-tokens"])


async def test_token_headers_are_sent_and_creates_spend_them(
    start_sim: StartSim, http: str
) -> None:
    async with start_sim(account(60_000), time_scale=1.0) as sim, sdk(sim, http) as client:
        first = await client.responses.with_raw_response.create(
            model="gpt-5-mini", input="x" * 400, background=True, max_output_tokens=1000
        )
        assert first.headers["x-ratelimit-limit-tokens"] == "60000"
        assert 58_890 <= remaining(first) <= 58_910  # 100 input + 1000 reserved, a ms of refill
        assert first.headers["x-ratelimit-reset-tokens"].endswith("s")
        second = await client.responses.with_raw_response.create(
            model="gpt-5-mini", input="x" * 400, background=True, max_output_tokens=1000
        )
        assert remaining(second) < remaining(first) - 1000
    assert sim.stats()["tokens"]["charged"] == 2200


async def test_token_limit_header_is_per_real_minute(start_sim: StartSim) -> None:
    async with start_sim(account(60_000), time_scale=0.5) as sim, sdk(sim) as client:
        raw = await client.responses.with_raw_response.create(model="m", input="x")
        assert raw.headers["x-ratelimit-limit-tokens"] == "120000"


@pytest.mark.parametrize("kind", ["responses", "assistants"])
async def test_retrieves_cancels_and_lists_cost_no_tokens(start_sim: StartSim, kind: str) -> None:
    slow = {**account(60_000), "lifecycle": {"queued": 50.0}}
    async with start_sim(slow, time_scale=1.0) as sim, sdk(sim) as client:
        if kind == "responses":
            resp = await client.responses.create(model="m", input="hello", background=True)
            before = remaining(await client.responses.with_raw_response.retrieve(resp.id))
            after = remaining(await client.responses.with_raw_response.retrieve(resp.id))
            await client.responses.cancel(resp.id)
        else:
            run = await client.beta.threads.create_and_run(
                assistant_id="asst_1", thread={"messages": [{"role": "user", "content": "hi"}]}
            )
            rid, tid = run.id, run.thread_id
            before = remaining(
                await client.beta.threads.runs.with_raw_response.retrieve(rid, thread_id=tid)
            )
            await client.beta.threads.messages.list(tid)
            after = remaining(
                await client.beta.threads.runs.with_raw_response.retrieve(rid, thread_id=tid)
            )
            await client.beta.threads.runs.cancel(rid, thread_id=tid)
        assert after >= before
    tokens = sim.stats()["tokens"]
    assert tokens["charged"] == (2 if kind == "responses" else 1) + 4096  # the default reservation


async def test_over_the_token_limit_is_a_429_of_type_tokens(start_sim: StartSim) -> None:
    async with start_sim(account(10_000), time_scale=1.0) as sim, sdk(sim) as client:
        for _ in range(2):  # 1000 input + 4000 reserved, twice: the minute is spent
            await client.responses.create(
                model="gpt-5-mini", input="x" * 4000, background=True, max_output_tokens=4000
            )
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(
                model="gpt-5-mini", input="x" * 800, background=True, max_output_tokens=1000
            )
    err = info.value
    assert err.body == {
        "message": err.body["message"],  # type: ignore[index]
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    pattern = (
        r"Rate limit reached for gpt-5-mini in organization org-sim on tokens per min \(TPM\): "
        r"Limit 10000, Used (\d+), Requested 1200\. Please try again in ([\d.]+)s\."
    )
    assert isinstance(err.body, dict)
    match = re.fullmatch(pattern, err.body["message"])
    assert match is not None, err.message
    assert 9_990 <= int(match[1]) <= 10_000
    assert 7.1 <= float(match[2]) <= 7.2  # 1200 tokens at 10000 per minute
    assert 7100 <= int(err.response.headers["retry-after-ms"]) <= 7200
    assert err.response.headers["retry-after"] == "8"
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["rate_limited_by_type"] == {"requests": 0, "tokens": 1, "too_large": 0}
    assert stats["tokens"]["charged"] == 10_000  # the refused request was not charged


async def test_a_request_larger_than_the_limit_is_refused_for_good(start_sim: StartSim) -> None:
    async with start_sim(account(30_000), time_scale=1.0) as sim, sdk(sim) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(
                model="gpt-5-mini", input="x" * 40_000, max_output_tokens=30_000
            )
    err = info.value
    assert isinstance(err.body, dict)
    assert err.body["type"] == "tokens"
    assert err.body["code"] == "rate_limit_exceeded"
    assert err.body["message"] == (
        "Request too large for gpt-5-mini in organization org-sim on tokens per min (TPM): "
        "Limit 30000, Requested 40000. The input or output tokens must be reduced in order to "
        "run successfully."
    )
    assert "retry-after" not in err.response.headers  # no wait will cure it
    assert "retry-after-ms" not in err.response.headers
    assert sim.stats()["rate_limited_by_type"]["too_large"] == 1


async def test_the_unused_reservation_comes_back_when_the_run_completes(
    start_sim: StartSim,
) -> None:
    async with start_sim(account(6000), time_scale=1.0) as sim, sdk(sim) as client:
        raw = await client.responses.with_raw_response.create(
            model="m", input="hi", background=True, max_output_tokens=3000
        )
        charged = remaining(raw)
        assert charged < 3000  # 1 + 3000 of 6000 taken
        done = await until_done(client, raw.parse())
        after = remaining(await client.responses.with_raw_response.retrieve(done.id))
        assert after > charged + 2800  # 2900 given back; the refill adds a few more
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (1, 100)
    tokens = sim.stats()["tokens"]
    assert (tokens["charged"], tokens["refunded"], tokens["used"]) == (3001, 2900, 101)
    assert tokens["outstanding"] == 0


async def test_a_request_that_fails_gets_all_its_tokens_back(start_sim: StartSim) -> None:
    broken = {**account(60_000), "faults": {"error_500": 1.0}}
    async with start_sim(broken, time_scale=1.0) as sim, sdk(sim) as client:
        with pytest.raises(openai.InternalServerError):
            await client.responses.create(model="m", input="hello")
        with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
            await client.responses.create(model="m", input="hello", max_output_tokens=5)
    tokens = sim.stats()["tokens"]
    assert (tokens["charged"], tokens["refunded"]) == (4098, 4098)


async def test_response_usage_parses_in_the_sdk_types(start_sim: StartSim) -> None:
    scenario = {**account(60_000), "tokens": {"output": 5000, "estimate": "bytes/2"}}
    async with start_sim(scenario, time_scale=1.0) as sim, sdk(sim) as client:
        resp = await client.responses.create(
            model="m", input="héllo", background=True, max_output_tokens=700
        )
        assert resp.usage is None  # null while not terminal
        await until_done(client, resp)
        raw = await client.responses.with_raw_response.retrieve(resp.id)
    body = Response.model_validate_json(raw.content)  # strict, unlike the SDK's own parse
    usage = ResponseUsage.model_validate(body.usage.model_dump() if body.usage else None)
    assert usage.input_tokens == 3  # 6 bytes over 2
    assert usage.output_tokens == 700  # the draw of 5000 is capped at the reservation
    assert usage.total_tokens == 703
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


async def test_run_usage_sums_every_pass_and_parses_in_the_sdk_run(start_sim: StartSim) -> None:
    tools = {**account(60_000), "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
    async with start_sim(tools, time_scale=1.0) as sim, sdk(sim) as client:
        run = await client.beta.threads.create_and_run(
            assistant_id="asst_1",
            thread={"messages": [{"role": "user", "content": "x" * 40}]},
            max_completion_tokens=500,
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
        )
        assert run.usage is None
        run = await until(client, run, {"requires_action"})
        assert run.usage is None  # not terminal yet
        assert run.required_action is not None
        calls = run.required_action.submit_tool_outputs.tool_calls
        run = await client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=run.thread_id,
            tool_outputs=[{"tool_call_id": c.id, "output": "y" * 80} for c in calls],
        )  # fmt: skip
        run = await until(client, run, {"completed"})
        raw = await client.beta.threads.runs.with_raw_response.retrieve(
            run.id, thread_id=run.thread_id
        )
    usage = Run.model_validate_json(raw.content).usage
    assert usage is not None
    # two passes: 10 + 20 input tokens, 100 output each
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (30, 200, 230)
    tokens = sim.stats()["tokens"]
    assert (tokens["charged"], tokens["refunded"]) == (30 + 2 * 500, 2 * 400)


async def test_a_run_on_a_thread_is_charged_for_the_thread(start_sim: StartSim) -> None:
    async with start_sim(account(60_000), time_scale=1.0) as sim, sdk(sim) as client:
        thread = await client.beta.threads.create()
        await client.beta.threads.messages.create(thread.id, role="user", content="z" * 400)
        assert sim.stats()["tokens"]["charged"] == 0  # adding a message runs no model
        await client.beta.threads.runs.create(
            thread.id, assistant_id="asst_1", max_completion_tokens=300
        )
    assert sim.stats()["tokens"]["charged"] == 100 + 300


async def test_a_tool_round_of_responses_costs_tokens(start_sim: StartSim) -> None:
    tools = {**account(60_000), "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
    async with start_sim(tools, time_scale=1.0) as sim, sdk(sim) as client:
        first = await client.responses.create(
            model="m", input="hi", background=True, tools=[WEATHER], max_output_tokens=200
        )
        first = await until_done(client, first)
        calls = [item for item in first.output if item.type == "function_call"]
        await client.responses.create(
            model="m", background=True, previous_response_id=first.id, max_output_tokens=200,
            input=[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"}
                   for c in calls],
        )  # fmt: skip
    assert sim.stats()["tokens"]["charged"] == (1 + 200) + (2 + 200)


async def test_the_requests_429_names_the_model_and_its_numbers(start_sim: StartSim) -> None:
    async with start_sim({"quota": {"rpm": 60, "window": 60}}, time_scale=1.0) as sim:
        async with sdk(sim) as client:
            await asyncio.gather(
                *(client.responses.create(model="m", input="x") for _ in range(60))
            )
            with pytest.raises(openai.RateLimitError) as info:
                await client.responses.create(model="gpt-5-mini", input="x")
    assert isinstance(info.value.body, dict)
    assert re.fullmatch(
        r"Rate limit reached for gpt-5-mini in organization org-sim on requests per min \(RPM\): "
        r"Limit 60, Used 60, Requested 1\. Please try again in \d+ms\.",
        info.value.body["message"],
    )
    assert info.value.body["type"] == "requests"
    assert sim.stats()["rate_limited_by_type"] == {"requests": 1, "tokens": 0, "too_large": 0}


async def test_without_tpm_nothing_is_refused_and_headers_are_as_before(
    start_sim: StartSim,
) -> None:
    async with start_sim("ample", time_scale=1.0) as sim, sdk(sim) as client:
        raw = await client.responses.with_raw_response.create(
            model="m", input="x" * 10_000_000, max_output_tokens=10_000_000
        )
    assert raw.headers["x-ratelimit-limit-tokens"] == "30000000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "29999000"
    stats = sim.stats()
    assert stats["tokens"]["limit"] is None
    assert stats["tokens"]["charged"] == 12_500_000  # counted, never refused
    assert stats["rate_limited"] == 0


async def test_the_tokens_scenario_refuses_tokens_not_requests(start_sim: StartSim) -> None:
    async with start_sim("tokens", time_scale=0.01) as sim, sdk(sim) as client:
        results = await asyncio.gather(
            *(
                client.responses.create(model="m", input="q" * 8_000, background=True)
                for _ in range(12)
            ),
            return_exceptions=True,
        )
        assert any(isinstance(r, openai.RateLimitError) for r in results)
        stats = sim.stats(timeline=True)
    by_type = stats["rate_limited_by_type"]
    assert by_type["requests"] == 0
    assert by_type["tokens"] >= 5  # a 10 s window holds 6,667 tokens: two requests of 3,000
    assert stats["tokens"]["peak_window"]["peak"] <= 2 * 40_000
    assert sum(stats["timeline"]["tokens"]) == stats["tokens"]["used"]
    assert sum(stats["timeline"]["token_rate_limited"]) == by_type["tokens"]


async def test_a_token_limit_changes_no_run_time_or_outcome_a_seed_replays(
    start_sim: StartSim,
) -> None:
    plans = []
    for quota in ({}, {"quota": {"tpm": 10**9}}):
        async with start_sim({"seed": 3, **quota}) as sim, sdk(sim) as client:
            for _ in range(5):
                await client.responses.create(model="m", input="hi", background=True)
            jobs = sim.app.responses.jobs()
            plans.append([(round(j.done_at - j.created, 6), j.plan) for j in jobs])
    assert plans[0] == plans[1]
