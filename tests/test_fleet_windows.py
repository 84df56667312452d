"""Discounted completion windows from the fleet's side, over real HTTP against the simulator:
the window and continuation id are sent and reused by tool rounds, learned apart, and polled on
the window's scale (an 8h run costs a handful of polls, not hundreds)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from openai import AsyncOpenAI
from structlog.testing import capture_logs

from runfleet import AssistantRunSpec, Fleet, PollPolicy, RunTimeout, tool
from runfleet.admission.gate import RequestGate
from runfleet.admission.quota import RequestQuota
from runfleet.kinds.responses import ResponsesKind, ResponseSpec
from runfleet.sim.server import serve_asgi
from runfleet.stats import StatsCollector
from runfleet.webhooks import WebhookReceiver

from .helpers import StartSim, fleet_on
from .test_fleet_invariants import in_process

SECRET = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NTY="
SCALE = 0.0005  # scenario seconds to real ones: an 8h window lasts 14 s
# Fixed queues so a soonest and an 8h run wait the same time and differ only by their window.
SAME_QUEUE: dict[str, Any] = {
    "lifecycle": {"queued": 1200, "in_progress": 30, "resume": 30},
    "windows": {"2h": {"queued": 1200, "follow_up": 60}, "8h": {"queued": 1200, "follow_up": 60}},
    "outcomes": {"failed": 0.0},
    "tools": {"probability": 0.0},
}


@tool
async def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def _kind() -> ResponsesKind:
    return ResponsesKind(
        AsyncOpenAI(api_key="sk-x"), RequestGate(RequestQuota(600), StatsCollector(), concurrency=1)
    )


def test_an_unknown_window_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="completion_window must be one of") as info:
        ResponseSpec("gpt-5-mini", "x", completion_window="3h")
    assert "\n" not in str(info.value)


def test_a_window_with_stream_or_raw_background_options_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="cannot be used with stream=True") as info:
        ResponseSpec("gpt-5-mini", "x", extra={"stream": True}, completion_window="8h")
    assert "\n" not in str(info.value)
    ResponseSpec("gpt-5-mini", "x", extra={"stream": True}, completion_window="soonest")
    with pytest.raises(ValueError, match="instead of background_options"):
        ResponseSpec("gpt-5-mini", "x", extra={"background_options": {"completion_window": "2h"}})


@pytest.mark.parametrize("name", ["completion_window", "continuation_id", "background_options"])
def test_a_window_on_an_assistants_run_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(ValueError, match="Assistants runs have none") as info:
        AssistantRunSpec("asst_1", "x", extra={name: "8h"})
    assert "\n" not in str(info.value)


def test_an_unknown_fleet_wide_window_is_refused_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match="completion_window must be one of") as info:
        Fleet(AsyncOpenAI(api_key="sk-x"), rpm=60, completion_window="24h")  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_the_window_goes_in_background_options_and_each_run_gets_a_continuation_id() -> None:
    kind = _kind()
    spec = ResponseSpec.of("gpt-5-mini", "x", None, None, (), {"completion_window": "8h"})
    first, second = kind.with_tools(spec, ()), kind.with_tools(spec, ())
    assert first.continuation_id
    assert second.continuation_id
    assert first.continuation_id != second.continuation_id  # one per run, not per spec
    assert kind.with_tools(first, ()).continuation_id == first.continuation_id
    options = first.create_args()["background_options"]
    assert options == {"completion_window": "8h", "continuation_id": first.continuation_id}
    plain = ResponseSpec("gpt-5-mini", "x")
    assert "background_options" not in kind.with_tools(plain, ()).create_args()
    given = ResponseSpec("gpt-5-mini", "x", completion_window="2h", continuation_id="mine")
    assert kind.with_tools(given, ()).continuation_id == "mine"


def test_learn_keys_differ_per_window() -> None:
    kind = _kind()
    keys = {
        kind.learn_key(ResponseSpec("gpt-5-mini", "x", completion_window=w))
        for w in (None, "soonest", "2h", "8h")
    }
    assert keys == {
        ("responses", "gpt-5-mini"),
        ("responses", "gpt-5-mini", "2h"),
        ("responses", "gpt-5-mini", "8h"),
    }


async def test_tool_rounds_reuse_the_window_and_continuation_and_get_priority(
    start_sim: StartSim,
) -> None:
    scenario = SAME_QUEUE | {
        "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 1, "submit_lag": 1}
    }
    policy = PollPolicy().scaled(SCALE)
    async with (
        start_sim(scenario, time_scale=SCALE) as sim,
        fleet_on(sim, tools=[get_weather], policy=policy) as fleet,
    ):
        handles = [
            await fleet.submit_response(
                model="gpt-5-mini", input=f"Weather {i}?", completion_window="8h"
            )
            for i in range(3)
        ]
        results = [await h for h in handles]
    assert all(r.status == "completed" for r in results)
    windows = sim.stats()["responses"]["windows"]
    assert set(windows) == {"8h"}  # every request of every chain kept the window
    assert windows["8h"]["total"] == 9
    assert windows["8h"]["follow_ups"] == 6  # both rounds of each run, queued with priority


@pytest.mark.looptime
async def test_an_8h_run_costs_a_handful_of_polls_where_a_soonest_one_costs_hundreds() -> None:
    """At the scenario's own time (the loop's clock faked): the same 10 min queue."""
    # Soonest runs queued 10 min would be stalled at 2 min: lift that, it is not the point.
    policy = PollPolicy(stall_unlearned=3600.0)
    queue = {"queued": 600, "follow_up": 60}
    ten_minutes = SAME_QUEUE | {
        "lifecycle": {"queued": 600, "in_progress": 30},
        "windows": {"2h": queue, "8h": queue},
    }
    async with in_process(ten_minutes, rpm=6000, policy=policy) as (app, fleet):
        eight = [
            await fleet.submit_response(model="gpt-5-mini", input="x", completion_window="8h")
            for _ in range(3)
        ]
        soonest = await fleet.submit_response(model="gpt-5-mini", input="x")
        long_wait = [(await h).figures.polls for h in eight]
        classic = (await soonest).figures.polls
    assert max(long_wait) <= 2  # first poll at 6 min, the next 15 min later at most
    assert classic >= 100  # the classic loop, capped at 5 s: ~125 polls on 10 min
    assert app.snapshot()["responses"]["windows"]["8h"]["total"] == 3


async def test_an_8h_run_queued_past_the_soonest_stall_limit_is_not_stalled(
    start_sim: StartSim,
) -> None:
    # The default policy calls a soonest run queued 2 min stalled; an 8h run waits 20 min here.
    async with (
        start_sim(SAME_QUEUE, time_scale=SCALE) as sim,
        fleet_on(sim, policy=PollPolicy().scaled(SCALE)) as fleet,
    ):
        handle = await fleet.submit_response(model="gpt-5-mini", input="x", completion_window="8h")
        result = await handle
    assert result.status == "completed"
    assert sim.stats()["responses"]["total"] == 1  # never cancelled and recreated


async def test_a_deadline_shorter_than_the_window_is_warned_about_once(
    start_sim: StartSim,
) -> None:
    async with (
        start_sim(SAME_QUEUE, time_scale=SCALE) as sim,
        fleet_on(sim, policy=PollPolicy().scaled(SCALE)) as fleet,
    ):
        with capture_logs() as logs:
            for window in ("8h", "8h", None):
                handle = await fleet.submit_response(
                    model="gpt-5-mini", input="x", completion_window=window, timeout=5.0
                )
                await handle
    warned = [e for e in logs if e["event"] == "deadline_within_window"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"


async def test_with_webhooks_an_8h_run_is_not_polled_before_its_window_ends(
    start_sim: StartSim,
) -> None:
    # Every event is lost and the safety net is 20 ms: only the window keeps the polls away.
    scale = 0.0002  # the 8h window lasts 5.8 s
    async with (
        start_sim(SAME_QUEUE, time_scale=scale) as sim,
        fleet_on(sim, webhooks=True, safety_poll=0.02, policy=PollPolicy().scaled(scale)) as f,
    ):
        receiver = WebhookReceiver(f, secret=SECRET)
        async with serve_asgi(receiver) as port:
            url = f"http://127.0.0.1:{port}/webhooks/openai"
            hooks = {"url": url, "secret": SECRET, "drop": 1.0}
            sim.reset(sim.app.scenario.replace(webhooks=hooks))
            started = anyio.current_time()
            result = await (
                await f.submit_response(model="gpt-5-mini", input="x", completion_window="8h")
            )
            waited = anyio.current_time() - started
    assert result.status == "completed"
    assert result.figures.polls == 1  # the safety net's, at the window's end
    assert waited >= 28800 * scale


async def test_the_fleet_wide_window_is_sent_by_specs_that_name_none(start_sim: StartSim) -> None:
    async with (
        start_sim(SAME_QUEUE, time_scale=SCALE) as sim,
        fleet_on(sim, policy=PollPolicy().scaled(SCALE), completion_window="2h") as fleet,
    ):
        default = await fleet.submit_response(model="gpt-5-mini", input="x")
        own = await fleet.submit_response(model="gpt-5-mini", input="x", completion_window="8h")
        results = [await default, await own]
    assert [r.status for r in results] == ["completed", "completed"]
    windows = sim.stats()["responses"]["windows"]
    assert (windows["2h"]["total"], windows["8h"]["total"]) == (1, 1)


async def test_a_watched_8h_run_keeps_its_window_and_is_cancelled_at_the_window_and_margin(
    start_sim: StartSim,
) -> None:
    """The spec given to watch() carries the window the SDK's Response does not echo: the run is
    polled on the window's scale and, with no deadline given, cancelled at 1.25 windows."""
    scale = 0.0001  # an 8h window lasts 2.9 s
    never = SAME_QUEUE | {"stalls": {"probability": 1.0, "queued": 10**6}}
    async with (
        start_sim(never, time_scale=scale) as sim,
        fleet_on(sim, policy=PollPolicy().scaled(scale)) as fleet,
    ):
        created = await fleet.client.responses.create(
            model="gpt-5-mini", input="x", background=True
        )
        started = anyio.current_time()
        spec = ResponseSpec("gpt-5-mini", None, completion_window="8h", continuation_id="c1")
        handle = fleet.watch(response_id=created.id, spec=spec)
        with pytest.raises(RunTimeout):
            await handle
        waited = anyio.current_time() - started
    assert 1.2 * 28800 * scale <= waited <= 1.6 * 28800 * scale
    retrieves = sim.stats()["responses"]["retrieves"]
    assert retrieves <= 60  # minutes apart: a soonest run would cost ~700 polls at 5 s
    assert sim.stats()["responses"]["by_status"].get("cancelled") == 1
