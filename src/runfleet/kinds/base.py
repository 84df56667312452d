"""What every kind adapter gives the fleet: a handful of states and one observation shape."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ..admission.estimates import TokenCost
from ..admission.gate import Ticket
from ..admission.token_quota import Reservation
from ..results import TokenUsage
from ..tools import ToolCall, ToolOutput

__all__ = [
    "ITEM_KEY",
    "NEEDS_CLIENT",
    "TERMINAL",
    "TRY_KEY",
    "Kind",
    "Observation",
    "RunRef",
    "RunState",
    "marked",
    "output_reservation",
    "texts_in",
]

ITEM_KEY = "runfleet_item"
"""The metadata key naming a batch item, so copies of one item can be found and counted."""
TRY_KEY = "runfleet_try"
"""The metadata key of each create try's nonce, so two copies of one run can be told apart."""
_MAX_KEYS = 16  # OpenAI's metadata limits (Responses and Assistants alike)
_MAX_VALUE = 512

# The keys of request items that hold text the model reads (messages, content parts, tool
# outputs and calls); image parts and files hold none of them and are not counted.
_TEXT_KEYS = ("messages", "content", "text", "output", "arguments")


def texts_in(value: Any) -> Iterator[str]:
    """Yield the text of a request's input: strings, and strings under text-bearing keys.

    Images and files are not counted: their token cost depends on details (resolution, pages)
    the fleet does not read; the learned estimation ratio absorbs what they add.
    """
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from texts_in(item)
    elif isinstance(value, Mapping):
        for key in _TEXT_KEYS:
            if key in value:
                yield from texts_in(value[key])


def output_reservation(extra: Mapping[str, Any], key: str) -> int | None:
    """Return the output a request reserves (``max_output_tokens``...), if it sets a valid one.

    Raises:
        ValueError: the value is not a positive whole number (the server would refuse it).
    """
    value = extra.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive whole number, got {value!r}")
    return value


class RunState(StrEnum):
    """The fleet's few states; OpenAI's statuses of both kinds map onto them."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    NEEDS_TOOLS = "needs_tools"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INCOMPLETE = "incomplete"


TERMINAL = frozenset(
    {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.EXPIRED,
        RunState.INCOMPLETE,
    }
)
NEEDS_CLIENT = TERMINAL | {RunState.NEEDS_TOOLS}


def marked(metadata: Mapping[str, str] | None, **marks: str) -> dict[str, str] | None:
    """Return ``metadata`` with the fleet's marks added where there is room.

    The user's keys win and are never dropped: a mark whose key the user set, or that would
    pass OpenAI's 16 keys, is left out (the create is unmarked rather than refused).
    """
    out = dict(metadata or {})
    for key, value in marks.items():
        if key not in out and len(out) < _MAX_KEYS:
            out[key] = value[:_MAX_VALUE]
    return out or None


@dataclass(slots=True)
class RunRef:
    """The ids of one run as they become known; a Responses chain moves ``id`` along.

    It also carries the run's token accounts, because the adapter that sends a run's requests
    is the one that reads their ``usage``: ``tokens`` are the reservations not yet settled,
    ``cost`` the first request's estimate (follow-ups reuse its model and reservation), and
    ``usage`` what the server reported, by response or run id so a second look adds nothing.
    """

    id: str = ""
    thread_id: str | None = None
    chain: list[str] = field(default_factory=list)
    tokens: list[Reservation] = field(default_factory=list)
    cost: TokenCost | None = None
    usage: dict[str, TokenUsage] = field(default_factory=dict)

    def reported(self, key: str, usage: TokenUsage) -> list[Reservation]:
        """Record the usage the server reported for ``key``; return the reservations it settles
        (each once: a second look at the same answer returns none)."""
        self.usage[key] = usage
        pending, self.tokens = self.tokens, []
        return pending

    @property
    def used(self) -> TokenUsage | None:
        """The run's tokens so far, every response of a chain summed; None if none reported."""
        if not self.usage:
            return None
        total = TokenUsage(0, 0)
        for part in self.usage.values():
            total += part
        return total


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at a run: its state, OpenAI's raw status and object, and what it asks for."""

    state: RunState
    status: str
    raw: Any
    tool_calls: tuple[ToolCall, ...] = ()
    poll_after: float | None = None
    error_code: str | None = None
    error_message: str | None = None


class Kind(Protocol):
    """An adapter: start, observe, answer tool calls, cancel and read the reply of one kind.

    Every request goes through the gate it was built with, so the fleet's quota sees it. What
    differs between kinds is said here, as flags and methods, so nothing else asks a kind its
    name to decide what to do.
    """

    name: str
    reply_requests: int  # requests ``reply`` makes: 0 when the reply is in the final body
    webhooks: bool  # whether the platform sends events when its runs end
    # Whether answering tools starts a new run (a Responses follow-up: a create, as costly and
    # as ambiguous as the first), rather than resuming the same one (Assistants).
    answer_creates: bool

    def learn_key(self, spec: Any) -> tuple[str, ...]:
        """Return what the run times of ``spec``'s runs are learned by (model, assistant...)."""
        ...

    def watch_key(self, spec: Any | None) -> tuple[str, ...]:
        """Return the key of a watched run (its start is unknown: not learned with the rest)."""
        ...

    def estimate(self, spec: Any) -> TokenCost:
        """Return what starting ``spec`` may cost in tokens: its text and output reservation."""
        ...

    def with_tools(self, spec: Any, tools: tuple[dict[str, Any], ...]) -> Any:
        """Return ``spec`` with the fleet's tool definitions where this kind needs them."""
        ...

    def continuation(self, raw: Any, tools: tuple[dict[str, Any], ...]) -> Any:
        """Return the spec that answers a watched run's tool calls (None: none is needed)."""
        ...

    async def start(self, spec: Any, ref: RunRef) -> Observation:
        """Create the run, fill ``ref`` with its ids, return the first observation."""
        ...

    def findable(self, spec: Any) -> tuple[bool, Any]:
        """Return whether a create of ``spec`` can be looked for (:meth:`find`) after an
        ambiguous try, and the spec later tries should send so that theirs can be."""
        ...

    async def find(self, spec: Any, ref: RunRef, nonce: str) -> Observation | None:
        """Return the run the try marked ``nonce`` started (``ref`` filled), None if none did."""
        ...

    async def observe(self, ref: RunRef, ticket: Ticket | None = None) -> Observation:
        """Retrieve the run once (spending ``ticket`` when the poll was admitted already)."""
        ...

    async def answer(
        self, ref: RunRef, spec: Any, outputs: Sequence[ToolOutput]
    ) -> Observation | None:
        """Send one round's tool outputs; a Responses chain moves ``ref.id`` to the new id.

        Returns None when the server no longer waits for these outputs (the run moved on, or
        they arrived before a dropped answer): a poll tells what happened, and does not resend.
        """
        ...

    async def cancel(self, ref: RunRef) -> None:
        """Ask the server to cancel the run."""
        ...

    async def reply(self, ref: RunRef, obs: Observation) -> str:
        """Return the reply text of a finished run (may cost one request)."""
        ...
