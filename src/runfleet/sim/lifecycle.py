"""The lifecycle of one simulated run, computed from timestamps when it is observed.

Nothing ticks: a run stores when each phase starts and ends, and its status is a pure
function of ``now``. That is what lets one process hold 20,000 live runs with no task and no
timer each. A *job* is one Responses response or one Assistants run; both share this model
and differ only in how their statuses are named and their bodies drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .scenario import Scenario

__all__ = ["NEEDS_CLIENT", "TERMINAL", "Job", "JobStatus", "Plan", "draw_plan"]


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
    # Observation, for the stats endpoint.
    retrieves: int = 0
    last_detected: float | None = None
    latencies: list[float] = field(default_factory=list)

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
        if status in NEEDS_CLIENT and self.last_detected != since:
            self.last_detected = since
            self.latencies.append(max(0.0, now - since))
        return status, since
