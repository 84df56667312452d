"""The workload every strategy of ``runfleet bench`` runs, and how a run ends for the table.

Every strategy starts the same N runs (same prompts, same tool definition) against a freshly
reset simulator with the same seed, so the only difference between two rows is how they poll.
Durations here are in scenario seconds; ``scale`` converts them to the real seconds a client
sleeps, as the simulator converts its own.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

from openai import AsyncOpenAI

from ..sim.scenario import Dist
from ..tools import ToolRegistry, tool

__all__ = ["ASSISTANT_ID", "MODEL", "Kind", "Outcome", "Workload", "lookup", "tool_definitions"]

Kind = Literal["responses", "assistants"]
Outcome = Literal["ok", "failed", "lost"]
"""``ok``: the result was fetched; ``failed``: the run itself ended otherwise than completed
(the scenario's own failures, the same for every strategy); ``lost``: the strategy gave up on
the run or crashed on an error, so its caller never learned how it ended."""

MODEL = "gpt-5-mini"
_FILLER = "lorem ipsum dolor sit amet "
ASSISTANT_ID = "asst_bench"


@tool
async def lookup(query: str) -> str:
    """Look something up (the bench answers every tool call with the same trivial output)."""
    del query
    return "ok"


@functools.cache
def _definitions(kind: Kind) -> tuple[dict[str, Any], ...]:
    return tuple(dict(d) for d in ToolRegistry([lookup]).definitions(kind))


def tool_definitions(kind: Kind) -> list[Any]:
    """Return the tool definitions every strategy sends, in the kind's own shape.

    Built once per kind: the hand-written loops send them with every create.
    """
    return list(_definitions(kind))


@dataclass(frozen=True, slots=True)
class Workload:
    """What one strategy is asked to do, and on which account."""

    kind: Kind
    runs: int
    in_flight: int
    """Runs started and not yet finished, at most: a batch job bounds them like this."""
    scale: float
    """Real seconds per scenario second."""
    rpm: float
    """The account's quota in requests per scenario minute."""
    timeout: float
    """Scenario seconds after which the hand-written loops that have a timeout give up."""
    limit: float
    """Scenario seconds after which the bench stops waiting for any run, whatever the
    strategy: a run still unresolved then counts as lost, and the bench always ends."""
    client: AsyncOpenAI
    poll_after: bool = False
    """Whether the server sends ``openai-poll-after-ms`` (the SDK's helpers then follow it)."""
    window: str | None = None
    """The completion window every response of the workload asks for (None: none sent)."""
    tpm: float | None = None
    """The account's tokens per scenario minute, for the strategies that budget tokens."""
    prompts: Dist | None = None
    """The prompts' sizes in tokens (the scenario's ``tokens.prompts``); None: one line each."""
    chars_per_token: float = 4.0
    """Characters a token by the scenario's estimate rule, to write prompts of those sizes."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"runs must be at least 1, got {self.runs}")
        if self.in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {self.in_flight}")
        for name in ("scale", "rpm", "timeout", "limit"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    def prompt(self, i: int) -> str:
        """Return the prompt of run ``i``: the same for every strategy (and every call)."""
        head = f"Bench question {i}"
        if self.prompts is None:
            return head
        tokens = max(1.0, self.prompts.draw(random.Random(self.seed * 1_000_003 + i)))
        size = max(len(head), round(tokens * self.chars_per_token))
        return (head + " " + _FILLER * (size // len(_FILLER) + 1))[:size]

    def background(self, i: int) -> dict[str, Any]:
        """Return the ``background_options`` argument of run ``i``'s requests, if any: its
        tool rounds reuse the window and continuation id, as they must to be queued first."""
        if self.window is None:
            return {}
        return {
            "background_options": {
                "completion_window": self.window,
                "continuation_id": f"bench-{i}",
            }
        }

    def real(self, seconds: float) -> float:
        """Return scenario ``seconds`` as the real seconds a client waits."""
        return seconds * self.scale
