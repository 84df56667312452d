"""The bench on a discounted completion window: which window the workload asks for, how long
every strategy may wait for it, and what the hand-written loops' schedules cost at real time.

A response in the ``8h`` window waits hours; the bench runs it at a small time scale, where a
hand-written loop's five-second sleep is five milliseconds and its round trip, not its
schedule, sets how often it polls (one process sends about 300 requests a second here). So
beside what such a loop did, the bench states what its schedule would spend at real time: its
sleeps replayed over each response's life as the simulator recorded it (from the create to
the moment it ended). The loops have no jitter and read no hint, so that count is exact for
them; it is not offered for the fleet, whose rows are measured.
"""

from __future__ import annotations

import math
from typing import Any

from ..polling.windows import WINDOW_SECONDS
from ..sim.scenario import Scenario
from .strategy import BenchError, StrategySpec, classic_backoff

__all__ = ["WINDOW_WAIT", "schedule_polls", "waited", "workload_window"]

WINDOW_WAIT = 1.5
"""Every strategy waits at least this many windows for a run before it is lost (the
hand-written loops' timeout and the bench's limit): the API targets completion within it."""


def workload_window(asked: str | None, scenario: Scenario, kind: str) -> str | None:
    """Return the window the workload's responses ask for: ``asked``, else the scenario's.

    Raises:
        BenchError: a window for Assistants runs, or an unknown one.
    """
    window = asked or scenario.windows.client_window
    if window is None:
        return None
    if window not in ("soonest", *WINDOW_SECONDS):
        raise BenchError(f"--completion-window must be soonest, 2h or 8h, not {window!r}")
    if kind != "responses":
        raise BenchError("a completion window needs --kind responses: Assistants runs have none")
    return window


def waited(seconds: float, window: str | None) -> float:
    """Return ``seconds`` (a timeout or the bench's limit), stretched to the window's wait."""
    span = WINDOW_SECONDS.get(window or "")
    return seconds if span is None else max(seconds, WINDOW_WAIT * span)


def schedule_polls(spec: StrategySpec, stats: dict[str, Any], done: int) -> float | None:
    """Return the polls per run ``spec``'s schedule makes at real time over the responses the
    simulator recorded (each tool round's response polled from its create, as the loop does),
    or None for a strategy that is not a fixed schedule."""
    if spec.name == "classic":
        count = classic_backoff(spec).polls_for
    elif spec.name == "fixed2s":

        def count(seconds: float) -> int:
            return max(1, math.ceil(seconds / 2.0))

    else:
        return None
    items = stats["responses"].get("items", ())
    if not done or not items:
        return None
    return sum(count(item["seconds"]) for item in items) / done
