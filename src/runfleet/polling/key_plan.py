"""A learned key's schedule from its run times: where the window starts, its gap, the cap.

Pure functions of the policy and the sorted times :class:`~runfleet.polling.learning.RunTimes`
keeps (or its estimates of them): the model decides *which* times and where the first poll
goes, this says what schedule they give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..stats import quantile
from .policy import PollPolicy

__all__ = ["Plan", "clamped", "gap_cap", "plan_for", "target_gap"]

MIN_WINDOW_POLLS = 2
"""A narrow window still gets this many polls: its runs are then detected quickly for free."""
MAX_WINDOW_POLLS = 10
"""A wide window gets at most this many polls, unless ``latency_target`` asks for more."""
CAP_SHARE = 0.1
"""The learned cap on gaps as a share of the learned median, where that passes the policy's:
a tenth of the median keeps the detection latency a small part of the run time."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The learned schedule of one key, recomputed on each of its completions."""

    start: float
    gap: float
    tail: float
    tail_gap: float
    cap: float


def target_gap(policy: PollPolicy, values: Sequence[float]) -> float:
    """Return the gap a key's runs should be polled at where they finish, before any clamp."""
    if policy.latency_target is not None:
        return policy.latency_target
    return policy.latency_fraction * quantile(values, 0.5)


def clamped(policy: PollPolicy, gap: float, cap: float) -> float:
    """Clamp a gap to the floor, and under the cap with jitter included, so that where runs
    finish the learned schedule polls at least as often as the classic loop at its slowest."""
    backoff = policy.backoff
    return min(max(gap, backoff.min_interval), cap * (1 - backoff.jitter))


def gap_cap(policy: PollPolicy, values: Sequence[float]) -> float:
    """Return the longest gap of a learned key: the classic loop's cap, or a share of the
    learned median when that is longer, so runs that take minutes are not polled every 5 s."""
    return max(policy.backoff.cap, CAP_SHARE * quantile(values, 0.5))


def plan_for(policy: PollPolicy, values: Sequence[float], start: float, squeeze: float) -> Plan:
    """Derive a key's schedule from its sorted observed run times and its first poll, every
    gap narrowed by the latency guard's ``squeeze``."""
    cap = max(squeeze * gap_cap(policy, values), policy.backoff.min_interval)
    tail = quantile(values, policy.high_quantile)
    target = widest = squeeze * target_gap(policy, values)
    if policy.latency_target is None:
        widest = max(target, (tail - start) / MAX_WINDOW_POLLS)
    gap = min(widest, max(tail - start, 0.0) / MIN_WINDOW_POLLS)
    return Plan(
        start=start,
        gap=clamped(policy, gap, cap),
        tail=tail,
        tail_gap=clamped(policy, target, cap),
        cap=cap,
    )
