"""Completion windows of background responses: ``background_options`` checked as the API does,
and the queue delay each window gives a response.

The discounted windows (``2h``, ``8h``) trade latency for price: the API accepts the request at
once and only targets completion *within* the window, so a response waits in ``queued`` for
minutes to hours. A follow-up (a tool round) that reuses the window, the continuation id and
the model is queued with priority, which is why it draws from a shorter distribution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .lifecycle import Job
from .scenario import Scenario
from .world import SimError

__all__ = ["WINDOWS", "BackgroundOptions", "parse_background_options", "place_in_window"]

# Window name -> its length in scenario seconds; None is no promise (as soon as possible).
WINDOWS: dict[str, float | None] = {"soonest": None, "2h": 7200.0, "8h": 28800.0}
_KEYS = ("completion_window", "continuation_id")


@dataclass(frozen=True, slots=True)
class BackgroundOptions:
    """What a create asked for; ``window`` is None for a foreground response."""

    window: str | None
    continuation_id: str | None

    def continues(self, earlier: BackgroundOptions) -> bool:
        """Return whether a follow-up shares the earlier response's window and continuation."""
        return (
            self.window is not None
            and self.continuation_id is not None
            and (self.window, self.continuation_id) == (earlier.window, earlier.continuation_id)
        )


def parse_background_options(body: dict[str, Any]) -> BackgroundOptions:
    """Return a create's window and continuation id, or raise the 400 the API answers.

    ``2h`` and ``8h`` need ``background: true``, no streaming and Standard processing.
    """
    background = bool(body.get("background", False))
    raw = body.get("background_options")
    if raw is None:
        return BackgroundOptions("soonest" if background else None, None)
    if not isinstance(raw, dict):
        raise _invalid_type("background_options", "an object", raw)
    for key in raw:
        if key not in _KEYS:
            raise SimError(
                400, f"Unknown parameter: 'background_options.{key}'.",
                param=f"background_options.{key}", code="unknown_parameter",
            )  # fmt: skip
    window = raw.get("completion_window", "soonest")
    if window not in WINDOWS:
        shown = ", ".join(f"'{w}'" for w in WINDOWS)
        raise SimError(
            400, f"Invalid value: {window!r}. Supported values are: {shown}.",
            param="background_options.completion_window", code="invalid_value",
        )  # fmt: skip
    continuation = raw.get("continuation_id")
    if continuation is not None and not isinstance(continuation, str):
        raise _invalid_type("background_options.continuation_id", "a string", continuation)
    if window != "soonest":
        _check_discounted(window, body, background)
    return BackgroundOptions(window if background else None, continuation or None)


def _check_discounted(window: str, body: dict[str, Any], background: bool) -> None:
    if not background:
        raise SimError(
            400, f"The '{window}' completion window requires 'background' to be true.",
            param="background", code="invalid_value",
        )  # fmt: skip
    if body.get("stream"):
        raise SimError(
            400, f"The '{window}' completion window cannot be used with 'stream': true.",
            param="stream", code="invalid_value",
        )  # fmt: skip
    tier = body.get("service_tier")
    if tier not in (None, "auto", "default"):
        raise SimError(
            400, f"The '{window}' completion window requires Standard processing; "
            f"'service_tier' {tier!r} is not supported with it.",
            param="service_tier", code="invalid_value",
        )  # fmt: skip


def _invalid_type(param: str, expected: str, got: Any) -> SimError:
    kind = type(got).__name__
    return SimError(
        400, f"Invalid type for '{param}': expected {expected}, but got {kind} instead.",
        param=param, code="invalid_type",
    )  # fmt: skip


def place_in_window(
    job: Job, window: str | None, follow_up: bool, scenario: Scenario, rng: random.Random
) -> None:
    """Re-lay a new job's queue for a discounted window, keeping its work time.

    Call before the job is charged: the token settlement reads ``done_at``. ``soonest`` and
    foreground jobs keep the lifecycle's timing, so requests without options are unchanged.
    """
    length = WINDOWS.get(window or "soonest")
    if length is None:
        return
    conf = scenario.windows.h2 if window == "2h" else scenario.windows.h8
    work = job.done_at - job.running_at
    queued = (conf.follow_up if follow_up else conf.queued).draw(rng)
    # The API targets completion within the window: a long draw is cut, never the work.
    queued = min(queued, max(0.0, length - work))
    job.running_at = job.created + queued
    job.done_at = job.running_at + work
