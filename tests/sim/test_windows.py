"""Completion windows over real HTTP with the real SDK: background_options validated as the API
does, queue delays per window, priority for follow-ups of a continuation, stats per window."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, omit
from openai.types.responses import Response
from openai.types.responses.response_create_params import BackgroundOptions

from runfleet.sim import SimApp

from ..helpers import StartSim, sdk

# Fixed times (scenario seconds) so a response's queue shows in completed_at - created_at.
TIMED: dict[str, Any] = {
    "lifecycle": {"queued": 1, "in_progress": 10, "resume": 10},
    "windows": {"2h": {"queued": 1000, "follow_up": 20}, "8h": {"queued": 5000, "follow_up": 50}},
    "outcomes": {"failed": 0.0},
}
SCALE = 0.0001  # 8 h in under 3 s of real time


async def until_done(client: AsyncOpenAI, resp: Response, step: float = 0.005) -> Response:
    """Poll tightly: the point here is the server's timing, not a polling strategy."""
    for _ in range(round(15 / step)):
        if resp.status not in ("queued", "in_progress"):
            return resp
        await asyncio.sleep(step)
        resp = await client.responses.retrieve(resp.id)
    raise AssertionError(f"{resp.id} never finished")


def took(resp: Response) -> float:
    """Return scenario seconds from create to completion (whole seconds, as the body has)."""
    assert resp.completed_at is not None
    return resp.completed_at - resp.created_at


async def create(
    client: AsyncOpenAI,
    options: BackgroundOptions | None,
    *,
    model: str = "gpt-5-mini",
    input: Any = "x",
    previous_response_id: str | None = None,
) -> Response:
    return await client.responses.create(
        model=model,
        input=input,
        background=True,
        background_options=omit if options is None else options,
        previous_response_id=previous_response_id,
    )


@pytest.mark.parametrize(
    ("options", "extra", "param", "code"),
    [
        ({"completion_window": "3h"}, {}, "completion_window", "invalid_value"),
        ({"completion_window": "2h"}, {"stream": True}, "stream", None),
        ({"completion_window": "8h"}, {"background": False}, "background", None),
        ({"completion_window": "8h"}, {"service_tier": "flex"}, "service_tier", None),
        ({"window": "8h"}, {}, "background_options.window", "unknown_parameter"),
        ({"continuation_id": 7}, {}, "continuation_id", "invalid_type"),
        ("8h", {}, "background_options", "invalid_type"),
    ],
)
async def test_bad_background_options_are_a_400_naming_the_param(
    start_sim: StartSim, options: Any, extra: dict[str, Any], param: str, code: str | None
) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        base = {"model": "gpt-5-mini", "input": "x", "background": True}
        body = base | {"background_options": options} | extra
        with pytest.raises(openai.BadRequestError) as info:
            await client.post("/responses", cast_to=Response, body=body)
        error = info.value.body
        assert isinstance(error, dict)
        assert error["param"].endswith(param)
        assert error["type"] == "invalid_request_error"
        assert code is None or error["code"] == code
        assert "\n" not in error["message"]
    assert sim.stats()["responses"]["total"] == 0


async def test_stream_with_a_discounted_window_is_refused_by_the_sdk_call(
    start_sim: StartSim,
) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        with pytest.raises(openai.BadRequestError, match="'2h' completion window"):
            await client.responses.create(
                model="m",
                input="x",
                background=True,
                stream=True,
                background_options={"completion_window": "2h"},
            )


async def test_soonest_is_allowed_in_the_foreground_and_changes_nothing(
    start_sim: StartSim,
) -> None:
    async with start_sim(TIMED, time_scale=SCALE) as sim, sdk(sim) as client:
        fore = await client.responses.create(
            model="m", input="x", background_options={"completion_window": "soonest"}
        )
        assert fore.status == "completed"
        plain = await until_done(client, await create(client, None))
        soonest = await until_done(client, await create(client, {"completion_window": "soonest"}))
        assert took(plain) == pytest.approx(11, abs=1)
        assert took(soonest) == pytest.approx(11, abs=1)
    # A foreground response has no window; one without options is in soonest.
    assert set(sim.stats()["responses"]["windows"]) == {"soonest"}
    assert sim.stats()["responses"]["windows"]["soonest"]["total"] == 2


@pytest.mark.parametrize(("window", "queued"), [("2h", 1000), ("8h", 5000)])
async def test_each_window_queues_by_its_own_distribution(
    start_sim: StartSim, window: str, queued: float
) -> None:
    async with start_sim(TIMED, time_scale=SCALE) as sim, sdk(sim) as client:
        options: BackgroundOptions = {"completion_window": window}  # type: ignore[typeddict-item]
        resp = await create(client, options)
        assert resp.status == "queued"
        assert resp.background is True
        done = await until_done(client, resp)
        assert done.status == "completed"
        assert took(done) == pytest.approx(queued + 10, abs=1)


@pytest.mark.parametrize(("window", "length"), [("2h", 7200), ("8h", 28800)])
async def test_a_long_queue_draw_is_cut_to_end_within_the_window(
    start_sim: StartSim, window: str, length: float
) -> None:
    scenario = TIMED | {"windows": {window: {"queued": 10 * length}}}
    async with start_sim(scenario, time_scale=SCALE / 4) as sim, sdk(sim) as client:
        options: BackgroundOptions = {"completion_window": window}  # type: ignore[typeddict-item]
        done = await until_done(client, await create(client, options))
        assert took(done) == pytest.approx(length, abs=1)


SAME: BackgroundOptions = {"completion_window": "8h", "continuation_id": "night-1"}
FOLLOW_UPS = [
    pytest.param(SAME, "m", 60, 1, id="same"),
    pytest.param(SAME | {"continuation_id": "other"}, "m", 5010, 0, id="other-id"),
    pytest.param({"completion_window": "8h"}, "m", 5010, 0, id="no-id"),
    pytest.param(SAME, "m2", 5010, 0, id="other-model"),
    pytest.param(SAME | {"completion_window": "2h"}, "m", 1010, 0, id="2h"),
    pytest.param(None, "m", 11, 0, id="soonest"),
]


@pytest.mark.parametrize(("options", "model", "expected", "prioritized"), FOLLOW_UPS)
async def test_a_follow_up_reusing_window_continuation_and_model_is_queued_first(
    start_sim: StartSim,
    options: BackgroundOptions | None,
    model: str,
    expected: float,
    prioritized: int,
) -> None:
    scenario = TIMED | {"tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
    async with start_sim(scenario, time_scale=SCALE) as sim, sdk(sim) as client:
        first = await until_done(client, await create(client, SAME, model="m"))
        calls = [o for o in first.output if o.type == "function_call"]
        assert len(calls) == 1
        follow = await create(
            client,
            options,
            model=model,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "ok"}],
        )
        done = await until_done(client, follow)
        assert done.status == "completed"
        assert done.output_text
        assert took(done) == pytest.approx(expected, abs=1)
    windows = sim.stats()["responses"]["windows"]
    assert windows["8h"]["follow_ups"] == prioritized


async def test_stats_report_retrieves_and_detection_per_window(start_sim: StartSim) -> None:
    async with start_sim(TIMED, time_scale=SCALE) as sim, sdk(sim) as client:
        made = [
            await create(client, None),
            await create(client, {"completion_window": "2h"}),
            await create(client, {"completion_window": "8h", "continuation_id": "c"}),
            await create(client, {"completion_window": "8h"}),
        ]
        polls = {"soonest": 0, "2h": 0, "8h": 0}
        for resp, window in zip(made, ["soonest", "2h", "8h", "8h"], strict=True):
            while resp.status in ("queued", "in_progress"):
                await asyncio.sleep(0.01)
                resp = await client.responses.retrieve(resp.id)
                polls[window] += 1
    stats = sim.stats(per_run=True)["responses"]
    windows = stats["windows"]
    assert list(windows) == ["soonest", "2h", "8h"]
    assert [windows[w]["total"] for w in windows] == [1, 1, 2]
    for window, polled in polls.items():
        assert windows[window]["retrieves"] == polled
        assert windows[window]["by_status"] == {"completed": windows[window]["total"]}
        det = windows[window]["detection"]
        assert det["count"] == windows[window]["total"]
        assert det["p95"] is not None
        assert det["p95"] >= 0
        assert det["max"] < 28800
    assert sum(windows[w]["retrieves"] for w in windows) == stats["retrieves"]
    assert [r["window"] for r in stats["items"]] == ["soonest", "2h", "8h", "8h"]


async def test_bodies_do_not_echo_the_window_unless_the_scenario_asks(
    start_sim: StartSim,
) -> None:
    options: BackgroundOptions = {"completion_window": "8h", "continuation_id": "c"}
    async with start_sim(TIMED, time_scale=SCALE) as sim, sdk(sim) as client:
        resp = await create(client, options)
        # SDK 3.57's Response declares no background_options: the API is not known to echo it.
        assert "background_options" not in (resp.model_extra or {})
        assert resp.service_tier == "default"
    echo = TIMED | {"windows": TIMED["windows"] | {"echo": True}}
    async with start_sim(echo, time_scale=SCALE) as sim, sdk(sim) as client:
        resp = await create(client, options)
        assert (resp.model_extra or {})["background_options"] == options
        again = await client.responses.retrieve(resp.id)
        assert (again.model_extra or {})["background_options"] == options


def test_windowed_body_keeps_exactly_the_sdk_fields() -> None:
    app = SimApp(TIMED, clock=lambda: 0.0)
    options = {"completion_window": "2h", "continuation_id": "c"}
    body = app.responses.create(
        {"model": "m", "input": "x", "background": True, "background_options": options}, 0.0
    )
    assert set(body) - set(Response.model_fields) == {"store"}
    Response.model_validate(body)


async def test_overnight_runs_mostly_8h_work_with_tool_rounds_within_the_window(
    start_sim: StartSim,
) -> None:
    """The built-in scenario at a small time scale: 8 h is a second and a half."""
    async with start_sim("overnight", time_scale=0.00005) as sim, sdk(sim) as client:

        async def one(i: int) -> Response:
            options: BackgroundOptions = {"completion_window": "8h", "continuation_id": f"n{i}"}
            resp = await until_done(client, await create(client, options), step=0.05)
            while calls := [o for o in resp.output if o.type == "function_call"]:
                outputs: Any = [
                    {"type": "function_call_output", "call_id": c.call_id, "output": "ok"}
                    for c in calls
                ]
                follow = await create(client, options, previous_response_id=resp.id, input=outputs)
                resp = await until_done(client, follow, step=0.05)
            return resp

        finals = await asyncio.gather(*(one(i) for i in range(30)))
    assert all(r.status in ("completed", "failed") for r in finals)
    stats = sim.stats(per_run=True)["responses"]
    night = stats["windows"]["8h"]
    assert night["total"] == stats["total"] > 30  # some needed tool rounds
    assert night["follow_ups"] == night["total"] - 30
    assert night["detection"]["count"] >= 30
