"""The polling code people write by hand, as ``runfleet bench`` measures it.

Each is written the way it is found in the wild, with the SDK's defaults (its two retries on
429 and 5xx included), one task per run, and no shared quota: ``naive`` (retrieve every
100 ms), ``classic`` (the widely copied backoff recipe: :class:`Backoff`'s delays, without
jitter), ``fixed2s`` (the loop in OpenAI's background-mode guide) and ``sdk`` (the SDK's own
``*_and_poll`` helpers, Assistants only), and ``cookbook``: the budgeted processor of
OpenAI's cookbook (``api_request_parallel_processor.py``), the one peer that counts tokens.
Tool rounds are answered with the same trivial output by every strategy. Where the original
has no error handling, an error ends the run for its caller: that is what ``lost`` counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import openai

from ..admission.estimates import count_tokens
from ..polling.schedule import Backoff
from .workload import ASSISTANT_ID, MODEL, Outcome, Workload, tool_definitions

__all__ = ["LOOPS", "Loop", "classic_loop", "cookbook_loop", "run_loops"]

T = TypeVar("T")

_WAITING = frozenset({"queued", "in_progress", "cancelling"})
_OUTPUT = "ok"

Delay = Callable[[int], float]
"""Scenario seconds to sleep before poll number ``attempt`` (0-based) of one phase."""
Loop = Callable[[Workload, int], Awaitable[Outcome]]
"""One run of the workload, from create to outcome."""


async def _create(w: Workload, i: int) -> Any:
    client = w.client
    if w.kind == "responses":
        return await client.responses.create(
            model=MODEL,
            input=w.prompt(i),
            background=True,
            tools=tool_definitions("responses"),
            **w.background(i),
        )
    return await client.beta.threads.create_and_run(
        assistant_id=ASSISTANT_ID,
        thread={"messages": [{"role": "user", "content": w.prompt(i)}]},
        tools=tool_definitions("assistants"),
    )


async def _retrieve(w: Workload, obj: Any) -> Any:
    if w.kind == "responses":
        return await w.client.responses.retrieve(obj.id)
    return await w.client.beta.threads.runs.retrieve(obj.id, thread_id=obj.thread_id)


async def _answer(w: Workload, obj: Any, i: int) -> Any | None:
    """Send the outputs of a tool round, if ``obj`` is one; return what to poll next."""
    if w.kind == "responses":
        calls = [item for item in obj.output or () if item.type == "function_call"]
        if obj.status != "completed" or not calls:
            return None
        return await w.client.responses.create(
            model=MODEL,
            previous_response_id=obj.id,
            input=[
                {"type": "function_call_output", "call_id": c.call_id, "output": _OUTPUT}
                for c in calls
            ],
            background=True,
            tools=tool_definitions("responses"),
            **w.background(i),
        )
    if obj.status != "requires_action" or obj.required_action is None:
        return None
    return await w.client.beta.threads.runs.submit_tool_outputs(
        obj.id,
        thread_id=obj.thread_id,
        tool_outputs=[
            {"tool_call_id": c.id, "output": _OUTPUT}
            for c in obj.required_action.submit_tool_outputs.tool_calls
        ],
    )


def _answers(w: Workload, obj: Any) -> bool:
    """Whether ``obj`` asks for tool outputs (so :func:`_answer` sends a request)."""
    if w.kind == "responses":
        return obj.status == "completed" and any(
            item.type == "function_call" for item in obj.output or ()
        )
    return obj.status == "requires_action" and obj.required_action is not None


async def _outcome(w: Workload, obj: Any) -> Outcome:
    """Fetch the reply of a completed run (Assistants need one more request); judge the end."""
    if obj.status != "completed":
        return "failed"
    if w.kind == "assistants":
        await w.client.beta.threads.messages.list(obj.thread_id, run_id=obj.id, limit=1)
    return "ok"


async def _poll(w: Workload, i: int, delay: Delay, *, forgiving: bool) -> Outcome:
    """Create run ``i`` and poll it until it ends; ``forgiving`` loops retry a failed poll."""
    obj = await _create(w, i)
    attempt = 0
    while True:
        if obj.status in _WAITING:
            await anyio.sleep(w.real(delay(attempt)))
            attempt += 1
            try:
                obj = await _retrieve(w, obj)
            except openai.APIError:
                if not forgiving:
                    raise
            continue
        nxt = await _answer(w, obj, i)
        if nxt is None:
            return await _outcome(w, obj)
        obj, attempt = nxt, 0


async def naive(w: Workload, i: int) -> Outcome:
    """``while True``: retrieve every 100 ms; stops after the timeout, crashes on an error."""
    with anyio.move_on_after(w.real(w.timeout)):
        return await _poll(w, i, lambda _: 0.1, forgiving=False)
    return "lost"


def classic_loop(backoff: Backoff | None = None) -> Loop:
    """Return the classic recipe sleeping ``backoff``'s un-jittered delays (its defaults: the
    classic loop), as the recipe is found in the wild.

    60 s timeout; a failed poll is tried again at the next step.
    """
    delays = (backoff if backoff is not None else Backoff()).base_delay

    async def classic(w: Workload, i: int) -> Outcome:
        with anyio.move_on_after(w.real(w.timeout)):
            return await _poll(w, i, delays, forgiving=True)
        return "lost"

    return classic


async def fixed2s(w: Workload, i: int) -> Outcome:
    """OpenAI's background-mode guide: ``while status in {queued, in_progress}: sleep(2)``."""
    return await _poll(w, i, lambda _: 2.0, forgiving=False)


async def sdk(w: Workload, i: int) -> Outcome:
    """The SDK's ``create_and_run_poll`` and ``submit_tool_outputs_and_poll``.

    They poll at the server's ``openai-poll-after-ms`` (read once per call), else every
    second, with no timeout and no jitter.
    """
    runs = w.client.beta.threads.runs
    # Its default second is real time: scale it like every other wait, unless the server
    # sends the hint (the simulator scales that itself), which an explicit interval overrides.
    interval: Any = {} if w.poll_after else {"poll_interval_ms": round(1000 * w.scale)}
    run = await w.client.beta.threads.create_and_run_poll(
        assistant_id=ASSISTANT_ID,
        thread={"messages": [{"role": "user", "content": w.prompt(i)}]},
        tools=tool_definitions("assistants"),
        **interval,
    )
    while run.status == "requires_action" and run.required_action is not None:
        run = await runs.submit_tool_outputs_and_poll(
            run_id=run.id,
            thread_id=run.thread_id,
            tool_outputs=[
                {"tool_call_id": c.id, "output": _OUTPUT}
                for c in run.required_action.submit_tool_outputs.tool_calls
            ],
            **interval,
        )
    return await _outcome(w, run)


class _CookbookBudget:
    """The cookbook processor's two capacities and its pause, shared by every run.

    As in the script: each capacity starts full at a whole minute's worth and refills at the
    limit over 60 s up to that; a request goes when both hold its cost, in arrival order; a
    rate-limit error stops everything for 15 s from the latest one (``seconds_to_pause_after_
    rate_limit_error``). Its cost in tokens is the prompt's plus ``max_tokens`` (15 when the
    request sets none), never reconciled with what the request really used.
    """

    PAUSE = 15.0  # scenario seconds

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.rpm = w.rpm / w.scale  # per real minute, as the client measures
        self.tpm = math.inf if w.tpm is None else w.tpm / w.scale
        self.requests, self.tokens = self.rpm, self.tpm
        self.at = -math.inf
        self.last_limited = -math.inf
        self.lock = asyncio.Lock()  # FIFO: the script's one "next request" waits at the head

    async def take(self, tokens: float) -> None:
        loop = asyncio.get_running_loop()
        async with self.lock:
            while True:
                now = loop.time()
                pause = self.last_limited + self.w.real(self.PAUSE) - now
                if pause > 0:
                    await anyio.sleep(pause)
                    continue
                if math.isfinite(self.at):
                    elapsed = now - self.at
                    self.requests = min(self.rpm, self.requests + self.rpm * elapsed / 60)
                    self.tokens = min(self.tpm, self.tokens + self.tpm * elapsed / 60)
                self.at = now
                if self.requests >= 1 and self.tokens >= tokens:
                    self.requests -= 1
                    self.tokens -= tokens
                    return
                short = max((1 - self.requests) / self.rpm, (tokens - self.tokens) / self.tpm)
                await anyio.sleep(max(0.001, short * 60))

    async def call(self, tokens: float, send: Callable[[], Awaitable[T]]) -> T:
        """Send through the budget; any error is tried again, 5 attempts in all."""
        for attempts_left in range(4, -1, -1):
            await self.take(tokens)
            try:
                return await send()
            except openai.APIError as exc:
                if isinstance(exc, openai.RateLimitError):
                    self.last_limited = asyncio.get_running_loop().time()
                if not attempts_left:
                    raise
        raise AssertionError("unreachable")


_COOKBOOK_OUTPUT = 15  # the script's default max_tokens, counted when a request sets none


def cookbook_loop(w: Workload) -> Loop:
    """Return the cookbook processor for workload ``w``: one budget for all its runs.

    A background run is a create and then polls (the classic loop's delays): each is one
    request through the budget, the create with the prompt's tokens (by the character rule,
    where the script runs tiktoken). The SDK's own retries are off, as the script has none.
    """
    budget = _CookbookBudget(w)
    quiet = dataclasses.replace(w, client=w.client.with_options(max_retries=0))
    delays = Backoff().base_delay

    async def cookbook(_: Workload, i: int) -> Outcome:
        cost = count_tokens([w.prompt(i)]) + _COOKBOOK_OUTPUT
        obj = await budget.call(cost, partial(_create, quiet, i))
        attempt = 0
        while True:
            if obj.status in _WAITING:
                await anyio.sleep(w.real(delays(attempt)))
                attempt += 1
                obj = await budget.call(0, partial(_retrieve, quiet, obj))
                continue
            if not _answers(w, obj):
                if obj.status == "completed" and w.kind == "assistants":  # the reply: a list
                    return await budget.call(0, partial(_outcome, quiet, obj))
                return await _outcome(quiet, obj)
            nxt = await budget.call(_COOKBOOK_OUTPUT, partial(_answer, quiet, obj))
            if nxt is None:
                return await _outcome(quiet, obj)
            obj, attempt = nxt, 0

    return cookbook


LOOPS: dict[str, Loop] = {
    "naive": naive,
    "fixed2s": fixed2s,
    "sdk": sdk,
}


async def run_loops(w: Workload, one: Loop) -> list[Outcome]:
    """Run every run of the workload through ``one``, at most ``in_flight`` at once.

    The bench's own limit bounds each run, so that a loop with no timeout of its own ends.
    """
    outcomes: list[Outcome] = ["lost"] * w.runs
    slots = anyio.Semaphore(w.in_flight)

    async def bounded(i: int) -> None:
        async with slots:
            with anyio.move_on_after(w.real(w.limit)):
                try:
                    outcomes[i] = await one(w, i)
                except (openai.APIError, ValueError):
                    # ValueError: the SDK's poll helpers refuse an unexpected status this way.
                    outcomes[i] = "lost"

    async with anyio.create_task_group() as tg:
        for i in range(w.runs):
            tg.start_soon(bounded, i)
    return outcomes
