"""The lifecycle of one simulated run, computed from timestamps when it is observed.

Nothing ticks: a run stores when each phase starts and ends, and its status is a pure
function of ``now``. That is what lets one process hold 20,000 live runs with no task and no
timer each. A *job* is one Responses response or one Assistants run; both share this model
and differ only in how their statuses are named and their bodies drawn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .scenario import Scenario

__all__ = ["NEEDS_CLIENT", "TERMINAL", "Job", "JobStatus", "Plan", "Segment", "draw_plan"]


class JobStatus(StrEnum):
    """Statuses of both kinds; Responses use the subset without the Assistants-only ones."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"  # Assistants only; a response completes with calls
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"


TERMINAL = frozenset(
    {
        JobStatus.CANCELLED,
        JobStatus.FAILED,
        JobStatus.COMPLETED,
        JobStatus.INCOMPLETE,
        JobStatus.EXPIRED,
    }
)
NEEDS_CLIENT = TERMINAL | {JobStatus.REQUIRES_ACTION}


@dataclass(frozen=True, slots=True)
class Plan:
    """How a run (or a chain of responses) will end, decided when it is created."""

    final: JobStatus
    error_code: str | None
    rounds: int
    stalled: bool


def draw_plan(scenario: Scenario, rng: random.Random) -> Plan:
    """Decide a new run's fate up front so a seeded scenario replays identically."""
    o = scenario.outcomes
    roll = rng.random()
    code = None
    if roll < o.failed:
        final = JobStatus.FAILED
        code = "rate_limit_exceeded" if rng.random() < o.rate_limit_share else "server_error"
    elif roll < o.failed + o.incomplete:
        final = JobStatus.INCOMPLETE
    else:
        final = JobStatus.COMPLETED
    rounds = 0
    if scenario.tools.probability and rng.random() < scenario.tools.probability:
        rounds = max(1, round(scenario.tools.rounds.draw(rng)))
    stalled = bool(scenario.stalls.probability) and rng.random() < scenario.stalls.probability
    return Plan(final=final, error_code=code, rounds=rounds, stalled=stalled)


@dataclass(slots=True, eq=False)
class Segment:
    """One pass of the model: charged in tokens when its request was admitted, settled at its end.

    A response is one pass; an Assistants run is one pass per start and per tool round, since
    each ``submit_tool_outputs`` sends new input and reserves output again.
    """

    admitted: float
    input: int
    reserved: int
    # The output the pass will really produce if it completes (drawn at admission).
    output: int
    # When usage becomes known: the end of the phase, moved by a cancel. Set by Job.charge.
    ends_at: float = math.inf
    refunded: int = 0
    settled: bool = False

    @property
    def charged(self) -> int:
        """Return the tokens taken at admission: the input plus the output reservation."""
        return self.input + self.reserved


@dataclass(slots=True)
class Job:
    """One response or run: its timeline, pending tool calls and what clients saw of it."""

    id: str
    created: float
    running_at: float
    done_at: float
    plan: Plan
    rounds_left: int
    expires_at: float | None = None
    # Assistants runs stop in requires_action; a response with calls simply completes.
    stops_for_action: bool = True
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: float | None = None
    cancel_done: float | None = None
    # While outputs "sink in" after a submission the run still shows the old requires_action.
    lag_until: float = 0.0
    prev_action_since: float = 0.0
    # A background response's completion window, and whether it was queued as a follow-up
    # of its continuation (None for runs and foreground responses).
    window: str | None = None
    prioritized: bool = False
    # Observation, for the stats endpoint.
    retrieves: int = 0
    last_detected: float | None = None
    latencies: list[float] = field(default_factory=list)
    polled: list[float] = field(default_factory=list)
    """Seconds from creation to each retrieve: where a strategy's polls went."""
    segments: list[Segment] = field(default_factory=list)

    def status_at(self, now: float) -> tuple[JobStatus, float]:
        """Return the status at ``now`` and the moment the job entered it."""
        if self.expires_at is not None and now >= self.expires_at:
            # Whatever the run was doing when it expired, it is expired from then on.
            status, since = self._status(self.expires_at)
            return (status, since) if status in TERMINAL else (JobStatus.EXPIRED, self.expires_at)
        return self._status(now)

    def _status(self, now: float) -> tuple[JobStatus, float]:
        if self.cancel_requested is not None and now >= self.cancel_requested:
            assert self.cancel_done is not None
            if now < self.cancel_done:
                return JobStatus.CANCELLING, self.cancel_requested
            return JobStatus.CANCELLED, self.cancel_done
        if now < self.lag_until:
            return JobStatus.REQUIRES_ACTION, self.prev_action_since
        if now < self.running_at:
            return JobStatus.QUEUED, self.created
        if now < self.done_at:
            return JobStatus.IN_PROGRESS, self.running_at
        if self.rounds_left > 0:
            action = JobStatus.REQUIRES_ACTION if self.stops_for_action else JobStatus.COMPLETED
            return action, self.done_at
        return self.plan.final, self.done_at

    def cancel(self, now: float, delay: float) -> None:
        """Start cancelling; the run shows ``cancelling`` for ``delay`` seconds."""
        self.cancel_requested = now
        self.cancel_done = now + delay
        if self.segments and self.segments[-1].ends_at > now:
            # The pass in flight stops producing: its usage is known once it is cancelled.
            self.segments[-1].ends_at = self.cancel_done

    def charge(self, segment: Segment) -> None:
        """Attach a pass just admitted; call it after the phase it pays for is laid out."""
        end = self.done_at if self.expires_at is None else min(self.done_at, self.expires_at)
        segment.ends_at = max(segment.admitted, end)
        self.segments.append(segment)

    def output_of(self, segment: Segment) -> int:
        """Return the output tokens a pass really produced, judged by how it ended.

        A pass cut short by ``max_output_tokens`` used its whole reservation; one that failed,
        was cancelled or expired produced nothing the account pays for.
        """
        if segment is not self.segments[-1]:
            return segment.output  # a later pass exists: this one ended asking for tools
        status, _ = self.status_at(segment.ends_at)
        if status in (JobStatus.COMPLETED, JobStatus.REQUIRES_ACTION):
            return segment.output
        return segment.reserved if status is JobStatus.INCOMPLETE else 0

    def unused(self, segment: Segment) -> int:
        """Return the reserved output a pass did not use: what the account gets back."""
        return segment.reserved - self.output_of(segment)

    def usage(self) -> tuple[int, int]:
        """Return (input, output) tokens over every pass, for a terminal job's ``usage``."""
        return (
            sum(s.input for s in self.segments),
            sum(self.output_of(s) for s in self.segments),
        )

    def resume(self, now: float, lag: float, work: float) -> None:
        """Continue after tool outputs: lag in requires_action, then work again."""
        self.prev_action_since = self.done_at
        self.lag_until = now + lag
        self.running_at = now + lag
        self.done_at = now + lag + work
        self.rounds_left -= 1

    def observe(self, now: float) -> tuple[JobStatus, float]:
        """Record a retrieve: count it, and the detection latency if it saw a new state."""
        status, since = self.status_at(now)
        self.retrieves += 1
        self.polled.append(round(now - self.created, 3))
        if status in NEEDS_CLIENT and self.last_detected != since:
            self.last_detected = since
            self.latencies.append(max(0.0, now - since))
        return status, since
