"""One tracked run: everything the engine knows of it, and how it ends (exactly once).

The record is the engine's; a :class:`~runfleet.engine.handle.RunHandle` is its submitter's
read-only view. Keeping the end here (the result or error, the event, the callbacks) lets the
handle hold no state of its own and the engine end a run without reaching into the handle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..errors import RunfleetError
from ..kinds.base import Kind, Observation, RunRef, RunState
from ..logs import get_logger
from ..results import RunFigures, RunResult, ToolRound

__all__ = ["Tracked"]

log = get_logger(__name__)


@dataclass(eq=False, slots=True)
class Tracked:
    """Everything the loop knows of one run. Idle, it is a heap entry and this record."""

    key: int
    kind: Kind
    spec: Any
    ref: RunRef
    learn_key: tuple[str, ...]
    created: float
    phase_start: float
    deadline: float | None
    tag: Any = None
    state: RunState = RunState.QUEUED
    status: str = "queued"
    # Polls of this phase, for the classic backoff: it does not restart when queued turns
    # in_progress (that says nothing of when the run ends), only after a tool round.
    attempt: int = 0
    polls_in_phase: int = 0
    first_poll_at: float = 0.0  # age of the phase's first poll (what the learned fit checks)
    planned: bool = False  # the phase's first poll was the learned schedule's
    seen_working: float = 0.0  # last poll that found it working: detection latency's start
    queued_until: float | None = None
    requests: int = 0
    polls: int = 0
    latency: float = 0.0
    rounds: list[ToolRound] = field(default_factory=list)
    answered: frozenset[str] = frozenset()  # call ids of the round already submitted
    busy: bool = False  # a request or a tool round for it is under way
    woken: bool = False  # someone asked for a poll while it was busy
    recreated: bool = False  # by the stall policy: once at most
    recreated_why: str | None = None  # created more than once, maybe: why (figures say it)
    creating: bool = False  # a follow-up create is on the wire (its id is not known yet)
    stall_reported: bool = False
    errors: int = 0  # consecutive transient failures
    scout: bool | None = None  # polls for its unlearned key's cohort (None: not decided yet)
    cancel_reason: str | None = None
    on_ids: Callable[[Any], None] | None = None  # the run's ids appeared or moved
    handle: Any = None  # the submitter's RunHandle, passed to on_ids and the callbacks
    result: RunResult | None = None
    error: RunfleetError | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    callbacks: list[Callable[[Any], None]] = field(default_factory=list)

    @property
    def followup(self) -> bool:
        """Whether the current phase continues after tool outputs (it runs shorter)."""
        return bool(self.rounds)

    @property
    def run_id(self) -> str:
        """The id polls ask for: the run's, or the newest response of a chain."""
        return self.ref.id

    @property
    def pushable(self) -> bool:
        """Whether the platform sends an event when this run ends (webhooks)."""
        return self.kind.webhooks

    def figures(self, now: float) -> RunFigures:
        """What the run cost and how long it took, as of ``now``."""
        started = self.queued_until if self.queued_until is not None else now
        return RunFigures(
            requests=self.requests,
            polls=self.polls,
            queued=started - self.created,
            running=now - started,
            total=now - self.created,
            detection_latency=self.latency,
            recreated=self.recreated_why,
        )

    def result_of(self, obs: Observation, text: str, now: float) -> RunResult:
        """The result of a run that ended with ``obs`` and reply ``text``."""
        return RunResult(
            kind=self.kind.name,  # type: ignore[arg-type]
            id=self.ref.id,
            status=obs.status,
            text=text,
            raw=obs.raw,
            tool_rounds=tuple(self.rounds),
            figures=self.figures(now),
            thread_id=self.ref.thread_id,
            response_ids=tuple(self.ref.chain),
            tag=self.tag,
            usage=self.ref.used,
        )

    def end(self, result: RunResult | None, error: RunfleetError | None) -> bool:
        """Settle the run once and call its done-callbacks; False if it had ended already."""
        if self.done.is_set():
            return False
        self.result, self.error = result, error
        self.done.set()
        callbacks, self.callbacks = self.callbacks, []
        for fn in callbacks:
            try:
                fn(self.handle)
            except Exception:  # the caller's bug must not end the loop that ends every run
                log.exception("done_callback_failed", run_id=self.ref.id)
        return True

    def ids_changed(self) -> None:
        """Call the submitter's hook: the run's ids exist now, or moved along a chain."""
        if self.on_ids is not None:
            self.on_ids(self.handle)
