"""Tool handlers by function name, and the round that answers a run's tool calls.

A run that needs the client stops with a batch of calls (a Responses ``function_call`` round or
an Assistants ``required_action``); :meth:`ToolRegistry.run_round` answers them concurrently,
one output per call, in call order. Nothing a handler does crashes the caller: an exception, a
timeout, bad arguments or an unknown name become an error output the model can read (or, by
policy, a :class:`~runfleet.errors.ToolError`). Cancellation is never swallowed. An async
handler that holds the event loop is named once (:mod:`runfleet.tools.blocking`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import anyio
import anyio.to_thread
import pydantic_core
from openai.types.beta import FunctionToolParam as AssistantsToolDefinition
from openai.types.responses import FunctionToolParam as ResponsesToolDefinition

from ..errors import ToolError
from ..logs import get_logger
from .blocking import BlockWatch, OnBlock
from .definition import Tool, ToolKind, tool

__all__ = ["OnToolError", "ToolCall", "ToolOutput", "ToolRegistry"]

OnToolError = Literal["reply", "fail"]

log = get_logger(__name__)

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


async def _invoke(handler: Tool[..., Any], kwargs: dict[str, Any], watch: BlockWatch) -> object:
    """Run the handler: async ones on the loop (each step timed), sync ones in a worker thread."""
    fn = handler.fn
    if handler.is_async:
        return await watch.run(handler.name, fn(**kwargs))
    # abandon_on_cancel: a timeout or a cancelled round stops waiting at once; the
    # thread itself cannot be killed and runs on until the function returns.
    result = await anyio.to_thread.run_sync(functools.partial(fn, **kwargs), abandon_on_cancel=True)
    if inspect.iscoroutine(result):  # a sync callable that hands back a coroutine
        return await watch.run(handler.name, result)
    if inspect.isawaitable(result):
        result = await result
    return result


def _keyword_arguments(handler: Tool[..., Any], raw: str) -> dict[str, Any]:
    """Read a call's arguments for ``handler``, or raise _CallFailed saying what is wrong."""
    try:
        return handler.parse_arguments(raw)
    except ValueError as exc:
        raise _CallFailed(str(exc)) from None


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
        on_block: OnBlock | None = None,
    ) -> None:
        """Register ``tools`` (plain functions are wrapped with :func:`tool`).

        Args:
            timeout: seconds a call may take when its tool sets no timeout of its own.
            on_error: ``"reply"`` sends failures to the model as error outputs; ``"fail"``
                raises :class:`~runfleet.errors.ToolError` so the fleet fails the run.
            on_block: called with the tool's name and the seconds each time a step of an
                async handler holds the event loop over 0.1 s; the first block of each tool
                is also logged (``tool_blocks_loop``), with what to do about it.

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
        self._watch = BlockWatch(on_block)
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
            kwargs = _keyword_arguments(handler, call.arguments)
            with anyio.move_on_after(timeout) as scope:
                try:
                    value = await _invoke(handler, kwargs, self._watch)
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
