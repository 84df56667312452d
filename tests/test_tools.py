"""Tests for runfleet.tools: schemas in both wire shapes, and rounds of tool calls."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import anyio
import anyio.from_thread
import pydantic
import pytest
from structlog.testing import capture_logs

from runfleet.errors import ToolError
from runfleet.tools import Tool, ToolCall, ToolOutput, ToolRegistry, tool


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


@tool
async def get_weather(city: str, unit: str = "C") -> str:
    """Current weather for a city."""
    return f"{city}: 21 {unit}"


@tool(name="lookup", timeout=5.0)
def lookup_sync(key: str) -> dict[str, int]:
    return {key: len(key)}


def forecast(
    city: Annotated[str, pydantic.Field(description="City name")],
    days: int | None = None,
    at: Point | None = None,
) -> str:
    """Forecast for a city."""
    return city


def twin(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return an async handler with ``fn``'s signature and result."""

    @functools.wraps(fn)
    async def handler(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return handler


def both(fn: Callable[..., Any]) -> list[Any]:
    """Parametrise a scenario over a sync handler and its async twin."""
    return [pytest.param(fn, id="sync"), pytest.param(twin(fn), id="async")]


def call(name: str, arguments: str | dict[str, Any] | None = None, call_id: str = "c1") -> ToolCall:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCall(call_id=call_id, name=name, arguments=raw)


@pytest.fixture(autouse=True, scope="module")
def _no_stray_event_loop() -> None:
    """Keep a sync test that runs before any async one from leaking an event loop.

    looptime asks the loop policy for its loop before every test, sync ones included; with no
    loop set yet, Python 3.11's policy creates one nobody closes, and its ResourceWarning
    fails a later test. Saying "no loop" is what pytest-asyncio does after each async test.
    """
    asyncio.get_event_loop_policy().set_event_loop(None)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Let hung sync handlers' abandoned threads finish once the test is over."""
    event = threading.Event()
    yield event
    event.set()


def hanging(flavour: str, release: threading.Event, started: anyio.Event) -> Callable[..., Any]:
    """Return a handler that never finishes on its own: async, or sync blocking its thread."""
    if flavour == "async":

        async def hang() -> str:
            started.set()
            await anyio.sleep_forever()
            return "unreachable"

        return hang

    def hang_sync() -> str:
        anyio.from_thread.run_sync(started.set)
        release.wait(10)
        return "released"

    return hang_sync


async def nap_async(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "rested"


def nap_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


FLAVOURS = pytest.mark.parametrize("flavour", ["async", "sync"])
NAPS = pytest.mark.parametrize("nap", [nap_async, nap_sync], ids=["async", "sync"])


# --- schemas ----------------------------------------------------------------------------------

WEATHER_PARAMETERS = {
    "additionalProperties": False,
    "properties": {
        "city": {"title": "City", "type": "string"},
        "unit": {"default": "C", "title": "Unit", "type": "string"},
    },
    "required": ["city"],
    "title": "get_weather",
    "type": "object",
}


def test_responses_definition_is_a_flat_function_tool() -> None:
    assert get_weather.definition("responses") == {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": WEATHER_PARAMETERS,
        "strict": False,
    }


def test_assistants_definition_nests_the_function() -> None:
    assert get_weather.definition("assistants") == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": WEATHER_PARAMETERS,
            "strict": False,
        },
    }


def test_definitions_are_copies_callers_may_mutate() -> None:
    parameters: Any = get_weather.definition("responses")["parameters"]
    parameters["required"].append("x")
    assert get_weather.parameters["required"] == ["city"]


def test_optional_and_annotated_parameters_keep_their_shape() -> None:
    schema = tool(forecast).parameters
    assert schema["required"] == ["city"]
    assert schema["properties"]["city"]["description"] == "City name"
    assert schema["properties"]["days"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "default": None,
        "title": "Days",
    }
    assert schema["properties"]["at"]["anyOf"][0] == {"$ref": "#/$defs/Point"}
    assert schema["$defs"]["Point"]["required"] == ["x"]


def test_strict_schema_requires_every_parameter_and_keeps_defaults_as_hints() -> None:
    strict = tool(strict=True)(forecast)
    definition = strict.definition("responses")
    schema = strict.parameters
    assert definition["strict"] is True
    assert schema["required"] == ["city", "days", "at"]
    assert schema["$defs"]["Point"]["required"] == ["x", "y"]
    assert schema["$defs"]["Point"]["additionalProperties"] is False
    assert schema["$defs"]["Point"]["properties"]["y"]["description"] == "Default: 0."
    assert "default" not in json.dumps(schema).replace("Default", "")


def test_strict_mode_refuses_free_form_mappings() -> None:
    def tally(counts: dict[str, int]) -> int:
        return sum(counts.values())

    tool(tally)  # fine when not strict
    with pytest.raises(TypeError, match="strict mode cannot describe"):
        tool(strict=True)(tally)


def test_decorator_arguments_override_name_description_and_timeout() -> None:
    assert (lookup_sync.name, lookup_sync.timeout, lookup_sync.description) == ("lookup", 5.0, "")
    renamed = tool(name="weather-now", description="Weather.", timeout=1.5)(forecast)
    assert renamed.definition("assistants")["function"]["name"] == "weather-now"
    assert renamed.definition("responses")["description"] == "Weather."
    assert renamed.timeout == 1.5


async def test_a_tool_stays_callable_like_its_function() -> None:
    assert isinstance(get_weather, Tool)
    assert await get_weather("Oslo") == "Oslo: 21 C"
    assert lookup_sync("abc") == {"abc": 3}
    assert (get_weather.is_async, lookup_sync.is_async) == (True, False)


def _args(*names: int) -> int:
    return 0


def _kwargs(**named: int) -> int:
    return 0


def _positional(a: int, /) -> int:
    return a


def _untyped(a) -> int:  # unannotated on purpose: the tool must refuse it
    return 0


@pytest.mark.parametrize(
    ("fn", "options", "error", "match"),
    [
        (_args, {}, TypeError, "must be a keyword parameter"),
        (_kwargs, {}, TypeError, "must be a keyword parameter"),
        (_positional, {}, TypeError, "must be a keyword parameter"),
        (_untyped, {}, TypeError, "needs a type annotation"),
        (lambda: 0, {}, ValueError, "tool name '<lambda>'"),
        (forecast, {"name": "has space"}, ValueError, "tool name"),
        (forecast, {"timeout": 0}, ValueError, "timeout must be positive"),
        (get_weather, {}, TypeError, "already a tool"),
    ],
)
def test_signatures_the_schema_cannot_describe_are_refused_at_decoration(
    fn: Any, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        tool(**options)(fn)


# --- registry ---------------------------------------------------------------------------------


def test_registry_wraps_plain_functions_and_indexes_tools_by_name() -> None:
    registry = ToolRegistry([get_weather, lookup_sync, forecast])
    assert registry.names == ("get_weather", "lookup", "forecast")
    assert len(registry) == 3
    assert "forecast" in registry
    assert "lookup_sync" not in registry
    assert isinstance(registry["forecast"], Tool)
    assert repr(registry) == "<ToolRegistry tools=3 timeout=60s on_error='reply'>"


def test_registry_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="two tools are named 'lookup'"):
        ToolRegistry([lookup_sync, tool(name="lookup")(forecast)])


def test_registry_lists_definitions_in_either_wire_shape() -> None:
    registry = ToolRegistry([get_weather, lookup_sync])
    assert registry.definitions("responses") == [
        get_weather.definition("responses"),
        lookup_sync.definition("responses"),
    ]
    assert [d["function"]["name"] for d in registry.definitions("assistants")] == [
        "get_weather",
        "lookup",
    ]
    with pytest.raises(ValueError, match="kind must be"):
        registry.definitions("chat")  # type: ignore[call-overload]


@pytest.mark.parametrize("options", [{"timeout": 0}, {"on_error": "ignore"}])
def test_registry_refuses_bad_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ToolRegistry([], **options)


# --- rounds -----------------------------------------------------------------------------------


async def test_an_empty_round_has_no_outputs() -> None:
    assert await ToolRegistry([get_weather]).run_round([]) == []


async def test_outputs_follow_call_order_not_completion_order() -> None:
    finished: list[float] = []

    async def wait(seconds: float) -> float:
        await anyio.sleep(seconds)
        finished.append(seconds)
        return seconds

    registry = ToolRegistry([wait])
    delays = [0.04, 0.03, 0.02, 0.01, 0.0]
    calls = [call("wait", {"seconds": d}, call_id=f"c{i}") for i, d in enumerate(delays)]
    outputs = await registry.run_round(calls)
    assert finished == sorted(delays)
    assert [(o.call_id, o.output) for o in outputs] == [
        (f"c{i}", str(d)) for i, d in enumerate(delays)
    ]


@NAPS
async def test_a_round_of_ten_slow_calls_takes_as_long_as_one(nap: Callable[..., Any]) -> None:
    registry = ToolRegistry([tool(name="nap")(nap)])
    calls = [call("nap", {"seconds": 0.2}, call_id=f"c{i}") for i in range(10)]
    with anyio.fail_after(1.0):  # one after the other would take 2 s
        outputs = await registry.run_round(calls)
    assert [o.output for o in outputs] == ["rested"] * 10


@FLAVOURS
async def test_every_call_of_a_round_is_in_flight_at_once(flavour: str) -> None:
    # Each call waits until all ten have started: a sequential round could never finish.
    barrier = threading.Barrier(10, timeout=2)
    arrived = 0
    all_arrived = anyio.Event()

    async def gather_async() -> str:
        nonlocal arrived
        arrived += 1
        if arrived == 10:
            all_arrived.set()
        await all_arrived.wait()
        return "together"

    def gather_sync() -> str:
        barrier.wait()
        return "together"

    handler = gather_async if flavour == "async" else gather_sync
    registry = ToolRegistry([tool(name="gather")(handler)])
    with anyio.fail_after(2):
        outputs = await registry.run_round([call("gather", call_id=f"c{i}") for i in range(10)])
    assert {o.output for o in outputs} == {"together"}


async def test_a_blocking_sync_handler_leaves_the_event_loop_running() -> None:
    loop_ran = threading.Event()

    def block() -> str:
        # time.sleep blocks this thread; only a free event loop can set loop_ran.
        deadline = time.monotonic() + 2
        while not loop_ran.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "loop ran" if loop_ran.is_set() else "loop was blocked"

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while ticks < 5:
            await anyio.sleep(0.01)
            ticks += 1
        loop_ran.set()

    registry = ToolRegistry([block])
    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        outputs = await registry.run_round([call("block")])
    assert ticks == 5
    assert outputs == [ToolOutput("c1", "loop ran")]


async def test_arguments_are_validated_and_coerced_to_the_signature() -> None:
    seen: list[Any] = []

    # `json` and `model_name` would clash with BaseModel attributes and namespaces.
    def record(count: int, at: Point, model_name: str, json: str = "kept") -> str:
        seen.append((count, at, model_name, json))
        return "ok"

    registry = ToolRegistry([record])
    arguments = {"count": "3", "at": {"x": "1"}, "model_name": "m"}
    await registry.run_round([call("record", arguments)])
    assert seen == [(3, Point(x=1, y=0), "m", "kept")]


async def test_empty_arguments_string_means_no_arguments() -> None:
    def ping() -> str:
        return "pong"

    assert await ToolRegistry([ping]).run_round([call("ping", "")]) == [ToolOutput("c1", "pong")]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{not json", "tool 'get_weather' got arguments that are not valid JSON: Expecting"),
        ("[1, 2]", "tool 'get_weather' got arguments that are not a JSON object but a list"),
        (
            {"city": 3},
            "tool 'get_weather' got invalid arguments: city: Input should be a valid string",
        ),
        ({"unit": "F"}, "tool 'get_weather' got invalid arguments: city: Field required"),
        ({"city": "Oslo", "x": 1}, "got invalid arguments: x: Extra inputs are not permitted"),
    ],
)
async def test_bad_arguments_become_an_error_output(arguments: Any, error: str) -> None:
    [output] = await ToolRegistry([get_weather]).run_round([call("get_weather", arguments)])
    assert output.error is not None
    assert error in output.error
    assert output.output == f"error: {output.error}"


async def test_an_unknown_tool_becomes_an_error_output() -> None:
    outputs = await ToolRegistry([get_weather]).run_round([call("nope")])
    assert outputs == [ToolOutput("c1", "error: unknown tool 'nope'", "unknown tool 'nope'")]


def _raise_bad_city(city: str) -> str:
    raise ValueError(f"bad city\n{city}")


@pytest.mark.parametrize("handler", both(_raise_bad_city))
async def test_a_raising_handler_becomes_a_one_line_error_output(handler: Any) -> None:
    registry = ToolRegistry([tool(name="weather")(handler)])
    [output] = await registry.run_round([call("weather", {"city": "Atlantis"})])
    assert output == ToolOutput(
        "c1",
        "error: tool 'weather' raised ValueError: bad city Atlantis",
        "tool 'weather' raised ValueError: bad city Atlantis",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text", "plain text"),
        ({"a": [1, 2.5]}, '{"a":[1,2.5]}'),
        ([True, None], "[true,null]"),
        (42, "42"),
        (None, "null"),
        (Point(x=1), '{"x":1,"y":0}'),
    ],
)
@FLAVOURS
async def test_return_values_are_sent_as_text_or_json(
    flavour: str, value: Any, expected: str
) -> None:
    def give() -> Any:
        return value

    handler = twin(give) if flavour == "async" else give
    [output] = await ToolRegistry([tool(name="give")(handler)]).run_round([call("give")])
    assert output == ToolOutput("c1", expected)


def _give_object() -> object:
    return object()


@pytest.mark.parametrize("handler", both(_give_object))
async def test_a_non_serialisable_return_becomes_an_error_output(handler: Any) -> None:
    [output] = await ToolRegistry([tool(name="give")(handler)]).run_round([call("give")])
    assert output.error == "tool 'give' returned a non-serialisable value of type object"


@pytest.mark.parametrize(("tool_timeout", "registry_timeout"), [(0.05, 60.0), (None, 0.05)])
@FLAVOURS
async def test_a_hung_call_times_out_with_an_error_output(
    flavour: str, tool_timeout: float | None, registry_timeout: float, release: threading.Event
) -> None:
    # A hung sync handler's thread cannot be killed: it is abandoned, and `release` ends it.
    hang = tool(name="hang", timeout=tool_timeout)(hanging(flavour, release, anyio.Event()))
    registry = ToolRegistry([hang], timeout=registry_timeout)
    with anyio.fail_after(1), capture_logs() as logs:
        [output] = await registry.run_round([call("hang")])
    assert output == ToolOutput(
        "c1", "error: tool 'hang' timed out after 0.05 s", "tool 'hang' timed out after 0.05 s"
    )
    assert logs == [
        {
            "event": "tool_timed_out",
            "log_level": "warning",
            "tool": "hang",
            "call_id": "c1",
            "error": "tool 'hang' timed out after 0.05 s",
        }
    ]


@pytest.mark.parametrize("handler", both(_raise_bad_city))
async def test_a_failing_call_spares_the_rest_of_its_round_and_later_rounds(handler: Any) -> None:
    registry = ToolRegistry([get_weather, tool(name="broken")(handler)])
    calls = [call("broken", {"city": "x"}, "c1"), call("get_weather", {"city": "Oslo"}, "c2")]
    for _ in range(2):
        broken, fine = await registry.run_round(calls)
        assert broken.error is not None
        assert fine == ToolOutput("c2", "Oslo: 21 C")


async def test_failures_are_logged_without_argument_values() -> None:
    registry = ToolRegistry([get_weather])
    with capture_logs() as logs:
        await registry.run_round([call("get_weather", {"city": ["s3cret"]}, "c9")])
    assert logs == [
        {
            "event": "tool_failed",
            "log_level": "warning",
            "tool": "get_weather",
            "call_id": "c9",
            "error": (
                "tool 'get_weather' got invalid arguments: city: Input should be a valid string"
            ),
        }
    ]
    assert "s3cret" not in repr(logs)


@FLAVOURS
async def test_fail_policy_raises_tool_error_and_cancels_the_rest_of_the_round(
    flavour: str, release: threading.Event
) -> None:
    hang = tool(name="hang")(hanging(flavour, release, anyio.Event()))
    registry = ToolRegistry([get_weather, hang], on_error="fail")
    calls = [call("hang", call_id="c1"), call("get_weather", "{", call_id="c2")]
    with anyio.fail_after(1), pytest.raises(ToolError) as caught:
        await registry.run_round(calls, run_id="resp_1")
    assert (caught.value.run_id, caught.value.tool) == ("resp_1", "get_weather")
    assert str(caught.value).startswith(
        "resp_1: tool 'get_weather' failed: got arguments that are not valid JSON"
    )


async def test_fail_policy_leaves_a_clean_round_alone() -> None:
    registry = ToolRegistry([get_weather], on_error="fail")
    outputs = await registry.run_round([call("get_weather", {"city": "Oslo"})], run_id="r")
    assert outputs == [ToolOutput("c1", "Oslo: 21 C")]


@FLAVOURS
async def test_a_cancelled_round_propagates_cancellation(
    flavour: str, release: threading.Event
) -> None:
    started = anyio.Event()
    registry = ToolRegistry([tool(name="hang")(hanging(flavour, release, started))])
    task = asyncio.create_task(registry.run_round([call("hang")]))
    with anyio.fail_after(1):
        await started.wait()
    task.cancel()
    with anyio.fail_after(1), pytest.raises(asyncio.CancelledError):
        await task


def test_parse_arguments_leaves_unsent_defaults_to_the_function_and_refuses_bad_json() -> None:
    assert get_weather.parse_arguments('{"city": "Oslo"}') == {"city": "Oslo"}
    with pytest.raises(ValueError, match="not valid JSON"):
        get_weather.parse_arguments("{")
