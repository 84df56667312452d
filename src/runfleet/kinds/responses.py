"""Responses background mode, the live path: create, retrieve, answer tool calls by chaining.

A response that wants tools *completes* with ``function_call`` items; the answer is a new
background response with ``previous_response_id`` and one ``function_call_output`` per call.
The fleet follows the chain under one handle; ``ref.id`` moves to each new response.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from openai import AsyncOpenAI
from openai.types.responses import Response

from ..admission.estimates import TokenCost
from ..admission.gate import RequestGate, RequestKind, Ticket
from ..errors import UnreadableBody
from ..results import TokenUsage
from ..tools import ToolCall, ToolOutput
from .base import Observation, RunRef, RunState, output_reservation, texts_in

__all__ = ["WINDOWS", "ResponseSpec", "ResponsesKind"]

WINDOWS = ("soonest", "2h", "8h")
"""The completion windows of ``background_options``; ``2h`` and ``8h`` are discounted."""

_STATES = {
    "queued": RunState.QUEUED,
    "in_progress": RunState.RUNNING,
    "completed": RunState.COMPLETED,
    "failed": RunState.FAILED,
    "cancelled": RunState.CANCELLED,
    "incomplete": RunState.INCOMPLETE,
}


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    """What to start: the arguments of ``responses.create`` (background and store are implied).

    ``tools`` are the function definitions sent with every request of the chain; ``extra``
    holds any other ``responses.create`` argument (``reasoning``, ``max_output_tokens``...).
    ``completion_window`` and ``continuation_id`` are sent as ``background_options``: ``2h``
    and ``8h`` cost less and wait longer, and the fleet polls them on their own scale. Every
    request of the chain reuses both, because a follow-up that does is queued with priority;
    a run with a window and no continuation id gets one of its own for that reason.

    Raises:
        ValueError: ``completion_window`` is not one of :data:`WINDOWS`, a discounted one is
            asked with ``stream``, or ``background_options`` is given whole in ``extra``.
    """

    kind: ClassVar[str] = "responses"

    model: str
    input: Any
    instructions: str | None = None
    metadata: dict[str, str] | None = None
    tools: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    completion_window: str | None = None
    continuation_id: str | None = None

    def __post_init__(self) -> None:
        window = self.completion_window
        if window is not None and window not in WINDOWS:
            raise ValueError(
                f"completion_window must be one of {', '.join(WINDOWS)}, not {window!r}"
            )
        if window in ("2h", "8h") and self.extra.get("stream"):
            raise ValueError(f"completion_window {window!r} cannot be used with stream=True")
        if "background_options" in self.extra:
            raise ValueError(
                "pass completion_window= and continuation_id= instead of background_options"
            )

    @classmethod
    def of(
        cls,
        model: str,
        input: Any,
        instructions: str | None,
        metadata: dict[str, str] | None,
        tools: tuple[dict[str, Any], ...],
        extra: Mapping[str, Any],
    ) -> ResponseSpec:
        """Build a spec from ``submit_response``'s keywords: the window and the continuation id
        are the spec's own fields, not arguments ``responses.create`` takes as they are."""
        rest = dict(extra)
        window = rest.pop("completion_window", None)
        continuation = rest.pop("continuation_id", None)
        return cls(model, input, instructions, metadata, tools, rest, window, continuation)

    def create_args(self) -> dict[str, Any]:
        """Return the arguments of ``responses.create`` but its input, which differs by request:
        the same for every request of a chain, window and continuation id included."""
        args: dict[str, Any] = {"model": self.model, "background": True, "store": True}
        if self.instructions is not None:
            args["instructions"] = self.instructions
        if self.metadata:
            args["metadata"] = self.metadata
        if self.tools:
            args["tools"] = list(self.tools)
        if self.completion_window is not None:
            options = {"completion_window": self.completion_window}
            if self.continuation_id is not None:
                options["continuation_id"] = self.continuation_id
            args["background_options"] = options
        return {**self.extra, **args}

    @property
    def window(self) -> str:
        """The window runs of this spec wait in: ``soonest`` unless a discounted one is set."""
        return self.completion_window or "soonest"


def poll_after(headers: Any) -> float | None:
    """Return the server's ``openai-poll-after-ms`` hint in seconds, if it sent a valid one."""
    value = headers.get("openai-poll-after-ms") if headers is not None else None
    try:
        return max(0.0, float(value) / 1000.0) if value is not None else None
    except ValueError:
        return None


def observe_response(resp: Response, headers: Any, request: str) -> Observation:
    """Map a ``Response`` onto the fleet's states; calls in a completed one are a tool round.

    Raises:
        UnreadableBody: the body lacks what its state needs (an id; a completed one's output):
            the run is the server's to end, so the fleet asks again rather than guess.
    """
    if not resp.id:
        raise UnreadableBody(request, "a response without an id")
    status = resp.status or "in_progress"
    state = _STATES.get(status, RunState.RUNNING)
    calls: tuple[ToolCall, ...] = ()
    if state is RunState.COMPLETED:
        if resp.output is None:
            raise UnreadableBody(request, f"response {resp.id} completed without its output")
        calls = tuple(
            ToolCall(item.call_id, item.name, item.arguments)
            for item in resp.output
            if item.type == "function_call"
        )
        if calls:
            state = RunState.NEEDS_TOOLS
    code: str | None = None
    message: str | None = None
    if resp.error is not None:
        code, message = resp.error.code, resp.error.message
    elif resp.incomplete_details is not None:
        code = resp.incomplete_details.reason
    return Observation(
        state=state,
        status=status,
        raw=resp,
        tool_calls=calls,
        poll_after=poll_after(headers),
        error_code=code,
        error_message=message,
    )


class ResponsesKind:
    """Adapter for ``responses.create(background=True, store=True)``."""

    name = "responses"
    reply_requests = 0
    webhooks = True
    answer_creates = True

    def __init__(self, client: AsyncOpenAI, gate: RequestGate, window: str | None = None) -> None:
        self.client = client
        self.gate = gate
        self.window = window
        """The fleet-wide window of specs that name none (None: ``soonest``)."""

    def learn_key(self, spec: ResponseSpec) -> tuple[str, ...]:
        """Responses are learned per model, and apart in a discounted window: its runs wait
        minutes to hours in the queue, which says nothing of the same model's ``soonest`` runs."""
        if spec.window == "soonest":
            return (self.name, spec.model)
        return (self.name, spec.model, spec.window)

    def watch_key(self, spec: ResponseSpec | None) -> tuple[str, ...]:
        """Watched responses are learned apart, in the spec's window (else the fleet's): the
        SDK's ``Response`` does not echo ``background_options``, so only the spec tells it."""
        window = spec.completion_window if spec is not None else None
        window = window or self.window or "soonest"
        if window == "soonest":
            return (self.name, "watched")
        return (self.name, "watched", window)

    def estimate(self, spec: ResponseSpec) -> TokenCost:
        """A response reads its instructions and input; it reserves ``max_output_tokens``."""
        return TokenCost(
            spec.model,
            tuple(texts_in([spec.instructions or "", spec.input])),
            output_reservation(spec.extra, "max_output_tokens"),
        )

    def _settle(self, ref: RunRef, resp: Response) -> None:
        """Settle the tokens of a response that ended; each response of a chain once."""
        if resp.usage is None or resp.status in ("queued", "in_progress"):
            return
        used = TokenUsage(resp.usage.input_tokens, resp.usage.output_tokens)
        if pending := ref.reported(resp.id, used):
            self.gate.settle_tokens(pending, used.input_tokens, used.output_tokens)

    def with_tools(self, spec: ResponseSpec, tools: tuple[dict[str, Any], ...]) -> ResponseSpec:
        """A chain sends definitions with every request: the fleet's, unless the spec has some.

        The engine calls this once per run, so it is also where a spec without a window takes
        the fleet's, and a run with a window and no continuation id gets its own: its tool
        rounds then reuse it and are queued first.
        """
        if spec.completion_window is None and self.window is not None:
            spec = dataclasses.replace(spec, completion_window=self.window)
        if spec.completion_window is not None and spec.continuation_id is None:
            spec = dataclasses.replace(spec, continuation_id=uuid.uuid4().hex)
        if spec.tools or not tools:
            return spec
        return dataclasses.replace(spec, tools=tuple(dict(t) for t in tools))

    def continuation(self, raw: Response, tools: tuple[dict[str, Any], ...]) -> ResponseSpec:
        """A watched chain continues with the response's own model and the fleet's tools."""
        return self.with_tools(ResponseSpec(raw.model, None), tools)

    async def start(self, spec: ResponseSpec, ref: RunRef) -> Observation:
        """Create a background response."""
        args = spec.create_args()
        cost = self.estimate(spec)
        tokens = await self.gate.reserve_tokens(cost)
        resp, headers = await self.gate.send(
            RequestKind.CREATE,
            lambda: self.client.responses.with_raw_response.create(input=spec.input, **args),
            tokens=tokens,
        )
        obs = observe_response(resp, headers, RequestKind.CREATE)
        ref.id = resp.id
        ref.chain.append(resp.id)
        ref.tokens.append(tokens)
        ref.cost = ref.cost or cost
        self._settle(ref, resp)
        return obs

    def findable(self, spec: ResponseSpec) -> tuple[bool, ResponseSpec]:
        """Responses cannot be listed: a copy of an ambiguous create is never found."""
        return False, spec

    async def find(self, spec: ResponseSpec, ref: RunRef, nonce: str) -> Observation | None:
        """Never called (see :meth:`findable`)."""
        del spec, ref, nonce
        raise NotImplementedError("responses cannot be listed")

    async def observe(self, ref: RunRef, ticket: Ticket | None = None) -> Observation:
        """Retrieve the current response of the chain."""
        resp, headers = await self.gate.send(
            ticket or RequestKind.RETRIEVE,
            lambda: self.client.responses.with_raw_response.retrieve(ref.id),
        )
        obs = observe_response(resp, headers, RequestKind.RETRIEVE)
        self._settle(ref, resp)
        return obs

    async def answer(
        self, ref: RunRef, spec: ResponseSpec, outputs: Sequence[ToolOutput]
    ) -> Observation:
        """Continue the chain with one ``function_call_output`` per call."""
        args = spec.create_args()
        items: list[Any] = [
            {"type": "function_call_output", "call_id": o.call_id, "output": o.output}
            for o in outputs
        ]
        previous = ref.id
        # The previous response's context is not charged again: only what this one adds.
        cost = self.estimate(dataclasses.replace(spec, input=items))
        tokens = await self.gate.reserve_tokens(cost)
        resp, headers = await self.gate.send(
            RequestKind.SUBMIT,
            lambda: self.client.responses.with_raw_response.create(
                input=items, previous_response_id=previous, **args
            ),
            tokens=tokens,
        )
        obs = observe_response(resp, headers, RequestKind.SUBMIT)
        ref.id = resp.id
        ref.chain.append(resp.id)
        ref.tokens.append(tokens)
        self._settle(ref, resp)
        return obs

    async def cancel(self, ref: RunRef) -> None:
        """Cancel the current response (idempotent on the server)."""
        await self.gate.send(
            RequestKind.CANCEL,
            lambda: self.client.responses.with_raw_response.cancel(ref.id),
        )

    async def reply(self, ref: RunRef, obs: Observation) -> str:
        """Return the text of the final response; it is in the retrieved body already."""
        del ref
        resp: Response = obs.raw
        return resp.output_text
