"""The polling code people write by hand, as ``runfleet bench`` measures it.

Each is written the way it is found in the wild, with the SDK's defaults (its two retries on
429 and 5xx included), one task per run, and no shared quota: ``naive`` (retrieve every
100 ms), ``classic`` (the widely copied backoff recipe: :class:`Backoff`'s delays, without
jitter), ``fixed2s`` (the loop in OpenAI's background-mode guide) and ``sdk`` (the SDK's own
``*_and_poll`` helpers, Assistants only).
Tool rounds are answered with the same trivial output by every strategy. Where the original
has no error handling, an error ends the run for its caller: that is what ``lost`` counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import openai

from ..polling.schedule import Backoff
from .workload import ASSISTANT_ID, MODEL, Outcome, Workload, tool_definitions

__all__ = ["LOOPS", "Loop", "classic_loop", "run_loops"]

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
