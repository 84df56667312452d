"""Tool handlers by function name, and the round that answers a run's tool calls.

A run that needs the client stops with a batch of calls (a Responses ``function_call`` round or
an Assistants ``required_action``); :meth:`ToolRegistry.run_round` answers them concurrently,
one output per call, in call order. Nothing a handler does crashes the caller: an exception, a
timeout, bad arguments or an unknown name become an error output the model can read (or, by
policy, a :class:`~runfleet.errors.ToolError`). Cancellation is never swallowed.

Schemas come from pydantic: the signature becomes a model whose JSON schema is ``parameters``
and which validates the arguments; strict schemas reuse the SDK's ``to_strict_json_schema``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar, cast, overload

import anyio
import anyio.to_thread
import pydantic
import pydantic_core
import structlog
from openai.lib._pydantic import to_strict_json_schema
from openai.types.beta import FunctionToolParam as AssistantsToolDefinition
from openai.types.responses import FunctionToolParam as ResponsesToolDefinition
from openai.types.shared_params import FunctionDefinition

from .errors import ToolError

__all__ = ["OnToolError", "Tool", "ToolCall", "ToolKind", "ToolOutput", "ToolRegistry", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

ToolKind = Literal["responses", "assistants"]
OnToolError = Literal["reply", "fail"]

log = structlog.get_logger(__name__)

# OpenAI's rule for function names; checked when the tool is made, not at the first 400.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for; ``arguments`` is the raw JSON string from the API."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The answer to one call; ``error`` is set when ``output`` reports a failure."""

    call_id: str
    output: str
    error: str | None = None


# eq=False: tools compare and hash by identity, and `parameters` (a dict) stays unhashed.
@dataclass(frozen=True, eq=False)
class Tool(Generic[P, R]):
    """A handler with the schema the model sees; call it like the function it wraps.

    Make one with :func:`tool`, not directly.
    """

    fn: Callable[P, R]
    name: str
    description: str
    parameters: dict[str, Any] = field(repr=False)
    strict: bool
    timeout: float | None
    arguments_model: type[pydantic.BaseModel] = field(repr=False)
    # (model field, parameter name, whether the function has its own default)
    _fields: tuple[tuple[str, str, bool], ...] = field(repr=False)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @property
    def is_async(self) -> bool:
        """Tell whether the handler runs on the event loop rather than in a worker thread."""
        return inspect.iscoroutinefunction(self.fn)

    @overload
    def definition(self, kind: Literal["responses"]) -> ResponsesToolDefinition: ...
    @overload
    def definition(self, kind: Literal["assistants"]) -> AssistantsToolDefinition: ...
    def definition(self, kind: ToolKind) -> ResponsesToolDefinition | AssistantsToolDefinition:
        """Return the tool definition in the wire shape of ``kind``.

        Raises:
            ValueError: ``kind`` is neither ``"responses"`` nor ``"assistants"``.
        """
        function: FunctionDefinition = {
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),  # callers may mutate what they send
            "strict": self.strict,
        }
        if kind == "responses":
            return cast(ResponsesToolDefinition, {"type": "function", **function})
        if kind == "assistants":
            return {"type": "function", "function": function}
        raise ValueError(f"kind must be 'responses' or 'assistants', not {kind!r}")

    def _keyword_arguments(self, raw: str) -> dict[str, Any]:
        """Parse and validate the model's JSON into keyword arguments, or raise _CallFailed."""
        try:
            # Some compatible servers send "" for a function without parameters.
            data = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise _CallFailed(f"got arguments that are not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise _CallFailed(f"got arguments that are not a JSON object but a {kind}")
        try:
            parsed = self.arguments_model.model_validate(data)
        except pydantic.ValidationError as exc:
            # Without the inputs: they may hold user data, and the model has them already.
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}"
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise _CallFailed(f"got invalid arguments: {problems}") from None
        # Leave unsent defaulted parameters to the function, which owns its defaults.
        return {
            name: getattr(parsed, attr)
            for attr, name, has_default in self._fields
            if attr in parsed.model_fields_set or not has_default
        }

    async def _invoke(self, kwargs: dict[str, Any]) -> object:
        """Run the handler: async ones on the loop, sync ones in a worker thread."""
        fn = cast(Callable[..., Any], self.fn)
        if self.is_async:
            return await fn(**kwargs)
        # abandon_on_cancel: a timeout or a cancelled round stops waiting at once; the
        # thread itself cannot be killed and runs on until the function returns.
        result = await anyio.to_thread.run_sync(
            functools.partial(fn, **kwargs), abandon_on_cancel=True
        )
        if inspect.isawaitable(result):  # a sync callable that hands back a coroutine
            result = await result
        return result


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a function (async, or sync to run in a worker thread) a tool the model can call.

    Every parameter needs a type annotation pydantic understands; document one with
    ``Annotated[str, pydantic.Field(description=...)]``.

    Args:
        name: the function name the model sees (default: the function's ``__name__``).
        description: what the model reads to choose the tool (default: the docstring).
        timeout: seconds one call may take (default: the registry's timeout).
        strict: have the platform guarantee arguments match the schema; every parameter is
            then required (defaults become hints) and ``dict[str, X]`` is refused.

    Raises:
        TypeError: a parameter is variadic, positional-only or unannotated, or (strict) a
            mapping strict mode cannot describe.
        ValueError: the name breaks OpenAI's rule or the timeout is not positive.

    Example::

        @tool
        async def get_weather(city: str, unit: str = "C") -> str:
            \"\"\"Current weather for a city.\"\"\"
    """

    def make(fn: Callable[P, R]) -> Tool[P, R]:
        return _make_tool(fn, name=name, description=description, timeout=timeout, strict=strict)

    return make if fn is None else make(fn)


def _make_tool(
    fn: Callable[P, R],
    *,
    name: str | None,
    description: str | None,
    timeout: float | None,
    strict: bool,
) -> Tool[P, R]:
    """Build the arguments model and schema from ``fn``'s signature."""
    if isinstance(fn, Tool):
        raise TypeError(f"{fn.name!r} is already a tool")
    name = name if name is not None else getattr(fn, "__name__", "")
    if not _NAME.fullmatch(name):
        raise ValueError(f"tool name {name!r} must be 1-64 of a-z, A-Z, 0-9, '_' or '-'")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be positive or None, not {timeout!r}")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for a type only defined in a local scope
        raise TypeError(f"cannot resolve the type hints of tool {name!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    mapping: list[tuple[str, str, bool]] = []
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"tool {name!r}: parameter {param.name!r} must be a keyword parameter")
        if param.name not in hints:
            raise TypeError(f"tool {name!r}: parameter {param.name!r} needs a type annotation")
        has_default = param.default is not param.empty
        # Neutral field names with the parameter as alias, so a parameter called `json` or
        # `model_x` neither shadows BaseModel attributes nor trips pydantic's namespaces.
        attr = f"p{index}"
        default = param.default if has_default else ...
        fields[attr] = (hints[param.name], pydantic.Field(default, alias=param.name))
        mapping.append((attr, param.name, has_default))
    model = pydantic.create_model(name, __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    schema = _strict_schema(model, name) if strict else model.model_json_schema()
    return Tool(
        fn=fn,
        name=name,
        description=description if description is not None else inspect.getdoc(fn) or "",
        parameters=schema,
        strict=strict,
        timeout=timeout,
        arguments_model=model,
        _fields=tuple(mapping),
    )


def _strict_schema(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    """Return the SDK's strict schema, without the keywords strict mode refuses."""
    schema = to_strict_json_schema(model)

    def visit(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        # Some servers answer 400 "'default' is not permitted"; keep it as a hint instead.
        if "default" in node:
            default = node.pop("default")
            hint = f"Default: {json.dumps(default)}."
            node["description"] = f"{node['description']} {hint}" if "description" in node else hint
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            raise TypeError(f"tool {name!r}: strict mode cannot describe the mapping at {path}")
        for key in ("properties", "$defs"):
            for child_name, child in node.get(key, {}).items():
                visit(child, f"{path}.{child_name}")
        for key in ("anyOf", "allOf", "prefixItems"):
            for child in node.get(key, []):
                visit(child, path)
        visit(node.get("items"), f"{path}[]")

    visit(schema, "arguments")
    return schema


class _CallFailed(Exception):
    """A call that ends in an error output; the message reads after "tool 'x' "."""


def _one_line(text: str) -> str:
    """Fold a message onto one bounded line, as the model and the logs want it."""
    line = " ".join(text.split())
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 3] + "..."


def _encode(value: object) -> str:
    """Turn a handler's return value into the output string, or raise _CallFailed."""
    if isinstance(value, str):
        return value
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:
        kind = type(value).__name__
        raise _CallFailed(f"returned a non-serialisable value of type {kind}") from None


class ToolRegistry:
    """Answer a run's tool calls with the registered handlers.

    Example::

        registry = ToolRegistry([get_weather, lookup], timeout=30)
        await client.responses.create(..., tools=registry.definitions("responses"))
        outputs = await registry.run_round(calls, run_id=response.id)
    """

    def __init__(
        self,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        timeout: float = 60.0,
        on_error: OnToolError = "reply",
    ) -> None:
        """Register ``tools`` (plain functions are wrapped with :func:`tool`).

        Args:
            timeout: seconds a call may take when its tool sets no timeout of its own.
            on_error: ``"reply"`` sends failures to the model as error outputs; ``"fail"``
                raises :class:`~runfleet.errors.ToolError` so the fleet fails the run.

        Raises:
            ValueError: two tools share a name, or ``timeout``/``on_error`` is invalid.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if on_error not in ("reply", "fail"):
            raise ValueError(f"on_error must be 'reply' or 'fail', not {on_error!r}")
        self.timeout = timeout
        self.on_error: OnToolError = on_error
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools:
            made = item if isinstance(item, Tool) else tool(item)
            if made.name in self._tools:
                raise ValueError(f"two tools are named {made.name!r}")
            self._tools[made.name] = made

    def __repr__(self) -> str:
        return (
            f"<ToolRegistry tools={len(self)} timeout={self.timeout:g}s on_error={self.on_error!r}>"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __getitem__(self, name: str) -> Tool[..., Any]:
        return self._tools[name]

    @property
    def names(self) -> tuple[str, ...]:
        """Return the tool names in registration order."""
        return tuple(self._tools)

    @overload
    def definitions(self, kind: Literal["responses"]) -> list[ResponsesToolDefinition]: ...
    @overload
    def definitions(self, kind: Literal["assistants"]) -> list[AssistantsToolDefinition]: ...
    def definitions(
        self, kind: ToolKind
    ) -> list[ResponsesToolDefinition] | list[AssistantsToolDefinition]:
        """Return every tool's definition in the wire shape of ``kind``, for ``tools=``."""
        if kind == "responses":
            return [t.definition("responses") for t in self._tools.values()]
        if kind == "assistants":
            return [t.definition("assistants") for t in self._tools.values()]
        raise ValueError(f"kind must be 'responses' or 'assistants', not {kind!r}")

    async def run_round(self, calls: Sequence[ToolCall], *, run_id: str = "") -> list[ToolOutput]:
        """Answer one round of calls concurrently; return one output per call, in call order.

        Args:
            calls: the round's calls, all to be answered in one submission.
            run_id: the run (or response) the round belongs to, for ``ToolError``.

        Raises:
            ToolError: a call failed and ``on_error`` is ``"fail"``; the round's other
                calls are cancelled (sync handlers' threads run on, abandoned).
        """
        answers: list[ToolOutput | None] = [None] * len(calls)
        failures: list[tuple[str, str]] = []

        async def answer(index: int, call: ToolCall) -> None:
            output, detail = await self._answer(call)
            answers[index] = output
            if detail is not None and self.on_error == "fail" and not failures:
                failures.append((call.name, detail))
                tg.cancel_scope.cancel()  # the run fails: the other answers are moot

        async with anyio.create_task_group() as tg:
            for index, call in enumerate(calls):
                tg.start_soon(answer, index, call)
        if failures:
            tool_name, detail = failures[0]
            raise ToolError(run_id or "-", tool_name, detail)
        return [output for output in answers if output is not None]

    async def _answer(self, call: ToolCall) -> tuple[ToolOutput, str | None]:
        """Answer one call; return its output and, when it failed, the failure's detail."""
        handler = self._tools.get(call.name)
        if handler is None:
            return self._failed(call, f"unknown tool {call.name!r}"), "unknown tool"
        timeout = handler.timeout if handler.timeout is not None else self.timeout
        try:
            kwargs = handler._keyword_arguments(call.arguments)
            with anyio.move_on_after(timeout) as scope:
                try:
                    value = await handler._invoke(kwargs)
                except Exception as exc:  # CancelledError is a BaseException: it propagates
                    raise _CallFailed(f"raised {type(exc).__name__}: {exc}") from None
            if scope.cancelled_caught:
                detail = f"timed out after {timeout:g} s"
                line = f"tool {call.name!r} {detail}"
                log.warning("tool_timed_out", tool=call.name, call_id=call.call_id, error=line)
                return ToolOutput(call.call_id, f"error: {line}", line), detail
            return ToolOutput(call.call_id, _encode(value)), None
        except _CallFailed as failed:
            detail = _one_line(str(failed))
            return self._failed(call, f"tool {call.name!r} {detail}"), detail

    def _failed(self, call: ToolCall, line: str) -> ToolOutput:
        """Log a failed call and build the error output the model reads."""
        log.warning("tool_failed", tool=call.name, call_id=call.call_id, error=line)
        return ToolOutput(call.call_id, f"error: {line}", line)
