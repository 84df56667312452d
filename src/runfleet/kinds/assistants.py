"""Assistants runs (legacy; OpenAI sunset the API on 2026-08-26, the SDK still has it).

A run stops in ``requires_action``; all outputs of a round go back in one
``submit_tool_outputs``. The reply is a message on the thread, fetched once at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import openai
from openai import AsyncOpenAI
from openai.types.beta.threads import Run

from ..admission.estimates import TokenCost
from ..admission.gate import RequestGate, RequestKind, Ticket
from ..errors import UnreadableBody
from ..logs import get_logger
from ..results import TokenUsage
from ..tools import ToolCall, ToolOutput
from .base import TRY_KEY, Observation, RunRef, RunState, output_reservation, texts_in
from .responses import poll_after

__all__ = ["AssistantRunSpec", "AssistantsKind"]

log = get_logger(__name__)

_STATES = {
    "queued": RunState.QUEUED,
    "in_progress": RunState.RUNNING,
    "requires_action": RunState.NEEDS_TOOLS,
    "cancelling": RunState.CANCELLING,
    "cancelled": RunState.CANCELLED,
    "failed": RunState.FAILED,
    "completed": RunState.COMPLETED,
    "incomplete": RunState.INCOMPLETE,
    "expired": RunState.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class AssistantRunSpec:
    """What to start: a run of ``assistant_id``, on a new thread or on ``thread_id``.

    With a ``prompt`` and no thread, one ``create_and_run`` request does it all (instead of
    create thread, add message, create run). ``tools`` override the assistant's own when set.
    ``own_thread`` creates the thread first (one request more): a run create on a known
    thread whose answer was lost is then looked for on it and adopted, never sent twice. The
    fleet sets it itself after an ambiguous ``create_and_run``.

    Raises:
        ValueError: ``extra`` holds a completion window, which only background responses have.
    """

    kind: ClassVar[str] = "assistants"

    assistant_id: str
    prompt: str | None = None
    thread_id: str | None = None
    instructions: str | None = None
    model: str | None = None
    metadata: dict[str, str] | None = None
    tools: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    own_thread: bool = False

    def __post_init__(self) -> None:
        for name in ("completion_window", "continuation_id", "background_options"):
            if name in self.extra:
                raise ValueError(f"{name} is for background responses: Assistants runs have none")


def observe_run(run: Run, headers: Any, request: str) -> Observation:
    """Map a ``Run`` onto the fleet's states.

    Raises:
        UnreadableBody: the body lacks what its state needs (ids; the calls a run waits on).
    """
    if not (run.id and run.thread_id):
        raise UnreadableBody(request, "a run without its id or thread id")
    state = _STATES.get(run.status, RunState.RUNNING)
    calls: tuple[ToolCall, ...] = ()
    if state is RunState.NEEDS_TOOLS:
        if run.required_action is None:
            raise UnreadableBody(request, f"run {run.id} requires action but names none")
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments)
            for c in run.required_action.submit_tool_outputs.tool_calls
        )
    code: str | None = None
    message: str | None = None
    if run.last_error is not None:
        code, message = run.last_error.code, run.last_error.message
    elif run.incomplete_details is not None:
        code = run.incomplete_details.reason
    return Observation(
        state=state,
        status=run.status,
        raw=run,
        tool_calls=calls,
        poll_after=poll_after(headers),
        error_code=code,
        error_message=message,
    )


class AssistantsKind:
    """Adapter for ``beta.threads.runs``."""

    name = "assistants"
    reply_requests = 1
    webhooks = False
    answer_creates = False

    def __init__(self, client: AsyncOpenAI, gate: RequestGate) -> None:
        self.client = client
        self.gate = gate

    def watch_key(self, spec: AssistantRunSpec | None) -> tuple[str, ...]:
        """Watched runs are learned apart: when they started is unknown."""
        del spec
        return (self.name, "watched")

    def learn_key(self, spec: AssistantRunSpec) -> tuple[str, ...]:
        """Runs are learned per assistant: its model and instructions make its times."""
        return (self.name, spec.assistant_id)

    def estimate(self, spec: AssistantRunSpec) -> TokenCost:
        """A run reads its instructions and prompt (a thread's older messages are not seen
        here: the learned ratio absorbs them); it reserves ``max_completion_tokens``."""
        return TokenCost(
            spec.model or spec.assistant_id,
            tuple(texts_in([spec.instructions or "", spec.prompt or ""])),
            output_reservation(spec.extra, "max_completion_tokens"),
        )

    def _settle(self, ref: RunRef, run: Run) -> None:
        """Settle every pass of a run once its usage (all passes summed) is reported."""
        if run.usage is None:
            return
        used = TokenUsage(run.usage.prompt_tokens, run.usage.completion_tokens)
        if pending := ref.reported(run.id, used):
            self.gate.settle_tokens(pending, used.input_tokens, used.output_tokens)

    def with_tools(
        self, spec: AssistantRunSpec, tools: tuple[dict[str, Any], ...]
    ) -> AssistantRunSpec:
        """A run keeps its assistant's own tools unless the spec passes some."""
        del tools
        return spec

    def continuation(self, raw: Run, tools: tuple[dict[str, Any], ...]) -> None:
        """Outputs go to the run itself: nothing needs to be started to answer them."""
        del raw, tools

    async def start(self, spec: AssistantRunSpec, ref: RunRef) -> Observation:
        """Start the run in one request: ``create_and_run``, or ``runs.create`` on a thread."""
        args: dict[str, Any] = dict(spec.extra)
        for name in ("instructions", "model", "metadata"):
            if (value := getattr(spec, name)) is not None:
                args[name] = value
        if spec.tools:
            args["tools"] = list(spec.tools)
        message = {"role": "user", "content": spec.prompt}
        threads = self.client.beta.threads
        cost = self.estimate(spec)
        thread_id = spec.thread_id
        if thread_id is None and spec.own_thread:
            thread_id = ref.thread_id or await self._own_thread(spec, message, ref)
            spec = dataclasses.replace(spec, prompt=None)  # it is in the thread now
        tokens = await self.gate.reserve_tokens(cost)
        if thread_id is None:
            if spec.prompt is not None:
                args["thread"] = {"messages": [message]}
            run, headers = await self.gate.send(
                RequestKind.CREATE,
                lambda: threads.with_raw_response.create_and_run(
                    assistant_id=spec.assistant_id, **args
                ),
                tokens=tokens,
            )
        else:
            if spec.prompt is not None:
                args["additional_messages"] = [message]
            run, headers = await self.gate.send(
                RequestKind.CREATE,
                lambda: threads.runs.with_raw_response.create(
                    thread_id, assistant_id=spec.assistant_id, **args
                ),
                tokens=tokens,
            )
        obs = observe_run(run, headers, RequestKind.CREATE)
        ref.id = run.id
        ref.thread_id = run.thread_id
        ref.tokens.append(tokens)
        ref.cost = cost
        self._settle(ref, run)
        return obs

    async def _own_thread(self, spec: AssistantRunSpec, message: Any, ref: RunRef) -> str:
        """Create the run's thread (no run, no tokens: a lost answer leaves an empty thread)."""
        messages = [message] if spec.prompt is not None else []
        thread, _ = await self.gate.send(
            RequestKind.CREATE,
            lambda: self.client.beta.threads.with_raw_response.create(messages=messages),
        )
        ref.thread_id = thread.id
        return str(thread.id)

    def findable(self, spec: AssistantRunSpec) -> tuple[bool, AssistantRunSpec]:
        """A run on a known thread can be found by listing the thread's runs; one started
        with its thread (``create_and_run``) cannot, so later tries create their thread first."""
        if spec.thread_id is not None or spec.own_thread:
            return True, spec
        return False, dataclasses.replace(spec, own_thread=True)

    async def find(self, spec: AssistantRunSpec, ref: RunRef, nonce: str) -> Observation | None:
        """Look for the run whose metadata carries ``nonce`` among its thread's latest runs."""
        thread_id = spec.thread_id or ref.thread_id
        if thread_id is None:  # its thread was never made: no run can have started
            return None
        page, headers = await self.gate.send(
            RequestKind.FETCH,
            lambda: self.client.beta.threads.runs.with_raw_response.list(
                thread_id, limit=20, order="desc"
            ),
        )
        for run in page.data:
            if (run.metadata or {}).get(TRY_KEY) == nonce:
                obs = observe_run(run, headers, RequestKind.FETCH)
                ref.id, ref.thread_id = run.id, run.thread_id
                return obs
        return None

    def _thread(self, ref: RunRef) -> str:
        if ref.thread_id is None:
            raise ValueError(f"run {ref.id} has no thread id")
        return ref.thread_id

    async def observe(self, ref: RunRef, ticket: Ticket | None = None) -> Observation:
        """Retrieve the run (raw, so the rate-limit headers reach the quota)."""
        thread_id = self._thread(ref)
        run, headers = await self.gate.send(
            ticket or RequestKind.RETRIEVE,
            lambda: self.client.beta.threads.runs.with_raw_response.retrieve(
                ref.id, thread_id=thread_id
            ),
        )
        obs = observe_run(run, headers, RequestKind.RETRIEVE)
        self._settle(ref, run)
        return obs

    async def answer(
        self, ref: RunRef, spec: AssistantRunSpec | None, outputs: Sequence[ToolOutput]
    ) -> Observation | None:
        """Submit all outputs of the round in one request; None if the run no longer waits."""
        del spec
        thread_id = self._thread(ref)
        tool_outputs: list[Any] = [{"tool_call_id": o.call_id, "output": o.output} for o in outputs]
        # Another pass of the same run: its outputs are read, the run's reservation is made.
        first = ref.cost or TokenCost("-", ())
        cost = TokenCost(first.model, tuple(o.output for o in outputs), first.output)
        tokens = await self.gate.reserve_tokens(cost)
        try:
            run, headers = await self.gate.send(
                RequestKind.SUBMIT,
                lambda: self.client.beta.threads.runs.with_raw_response.submit_tool_outputs(
                    ref.id, thread_id=thread_id, tool_outputs=tool_outputs
                ),
                tokens=tokens,
            )
        except openai.BadRequestError as exc:
            # Not in requires_action any more (expired, cancelled, or our outputs did arrive
            # before a dropped answer): a poll will tell, and will not resubmit.
            log.info("tool_outputs_refused", run_id=ref.id, error=exc.message)
            return None
        obs = observe_run(run, headers, RequestKind.SUBMIT)
        ref.tokens.append(tokens)
        self._settle(ref, run)
        return obs

    async def cancel(self, ref: RunRef) -> None:
        """Ask for cancellation; the run goes ``cancelling`` then ``cancelled``."""
        thread_id = self._thread(ref)
        await self.gate.send(
            RequestKind.CANCEL,
            lambda: self.client.beta.threads.runs.with_raw_response.cancel(
                ref.id, thread_id=thread_id
            ),
        )

    async def reply(self, ref: RunRef, obs: Observation) -> str:
        """Fetch the run's newest message: one ``messages.list`` with ``limit=1``."""
        del obs
        thread_id = self._thread(ref)
        page, _ = await self.gate.send(
            RequestKind.FETCH,
            lambda: self.client.beta.threads.messages.with_raw_response.list(
                thread_id, run_id=ref.id, limit=1, order="desc"
            ),
        )
        texts = [
            block.text.value
            for message in page.data
            for block in message.content
            if block.type == "text"
        ]
        return "\n".join(texts)
