"""What a finished run gives back: the final object, the reply, its tool rounds, its figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .tools import ToolCall, ToolOutput

__all__ = ["RunFigures", "RunResult", "TokenUsage", "ToolRound"]

Kind = Literal["responses", "assistants"]


@dataclass(frozen=True, slots=True)
class ToolRound:
    """One round of tool calls the run asked for and the outputs the fleet sent back."""

    calls: tuple[ToolCall, ...]
    outputs: tuple[ToolOutput, ...]


@dataclass(frozen=True, slots=True)
class RunFigures:
    """What one run cost and how quickly the fleet noticed it, in seconds of the loop clock.

    ``detection_latency`` is an upper bound as the fleet sees it: the time between the last
    poll that still found the run working and the poll that found it done, summed over every
    state that needed the client (tool rounds and the end).

    ``recreated`` says why the run was created more than once, or is None: ``"stalled"``
    (the first copy was cancelled), or what made an earlier create ambiguous (``"connection
    lost"``, ``"timed out"``, ``"unreadable answer"``): that copy may exist, paid for.
    """

    requests: int
    polls: int
    queued: float
    running: float
    total: float
    detection_latency: float
    recreated: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens a run used as the server reported them, every response of a chain summed."""

    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        """Input and output together: what counts against tokens per minute."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    """A run that reached a terminal state the caller can use.

    Attributes:
        kind: ``"responses"`` or ``"assistants"``.
        id: the final response id (the last of a tool chain) or the run id.
        status: OpenAI's final status (``completed``, or ``incomplete`` when allowed).
        text: the reply's text.
        raw: the final ``Response`` or ``Run`` object as the SDK parsed it.
        tool_rounds: every round answered on the way.
        figures: requests, polls and timings of this run.
        thread_id: the thread of an Assistants run.
        response_ids: every response id of a Responses chain, first to last.
        tag: whatever the caller attached at submission (e.g. a batch item's id).
        usage: the tokens the server reported (None if it reported none).
    """

    kind: Kind
    id: str
    status: str
    text: str
    raw: Any
    tool_rounds: tuple[ToolRound, ...]
    figures: RunFigures
    thread_id: str | None = None
    response_ids: tuple[str, ...] = ()
    tag: Any = None
    usage: TokenUsage | None = None
