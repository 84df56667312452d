"""The learned schedule against the classic loop, without a server: polls and detection latency.

``runfleet bench`` measures whole strategies against the simulator, HTTP and quota included;
this isolates the schedule. One run at a time is polled as :class:`Backoff` says and as a
:class:`RunTimes` learning online from its own polls says, over the same drawn run times, with
no network time and no status change before the run finishes. It is deterministic for a seed,
so the tests pin the learned schedule's claims with it and ``benchmarks/`` reproduces the
figures the docs quote from it.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from ..polling.learning import RunTimes
from ..polling.policy import PollPolicy
from ..polling.schedule import Backoff
from ..stats import quantile

__all__ = [
    "Draw",
    "Race",
    "classic_run",
    "fixed",
    "learned_run",
    "lognormal",
    "poll_until_done",
    "race",
    "uniform",
]

K = TypeVar("K", bound=Hashable)

Draw = Callable[[random.Random], float]
"""Draw one run time in seconds."""

_KEY = ("responses", "race")


def lognormal(median: float, sigma: float) -> Draw:
    """Run times of one model: lognormal around ``median``."""
    return lambda rng: rng.lognormvariate(math.log(median), sigma)


def fixed(seconds: float) -> Draw:
    """Every run takes ``seconds``."""
    return lambda rng: seconds


def uniform(low: float, high: float) -> Draw:
    """Run times spread evenly: from 0 s, a lower tail far heavier than a lognormal's."""
    return lambda rng: rng.uniform(low, high)


def poll_until_done(delay: Callable[[float, int], float], duration: float) -> list[float]:
    """Poll a run that finishes at ``duration`` as ``delay(elapsed, attempt)`` says; return the
    polls' times, the last of which saw it done."""
    elapsed = 0.0
    polls: list[float] = []
    while elapsed < duration:
        elapsed += delay(elapsed, len(polls))
        polls.append(elapsed)
    return polls


def classic_run(backoff: Backoff, duration: float, rng: random.Random) -> tuple[int, float]:
    """Poll one run on the classic loop; return its polls and when the last saw it done."""
    polls = poll_until_done(lambda _elapsed, attempt: backoff.next_delay(attempt, rng), duration)
    return len(polls), polls[-1]


def learned_run(
    model: RunTimes[K], key: K, duration: float, rng: random.Random
) -> tuple[int, float]:
    """Poll one run on the learned schedule and teach the model what the polls saw, as the
    fleet does; return its polls and when the last saw it done."""
    polls = poll_until_done(
        lambda elapsed, attempt: model.next_delay(key, elapsed, attempt, rng), duration
    )
    previous = polls[-2] if len(polls) > 1 else None
    model.observe_done(
        key, polls[-1], first_poll=len(polls) == 1, previous=previous, first_at=polls[0]
    )
    return len(polls), polls[-1]


@dataclass(frozen=True, slots=True)
class Race:
    """Mean polls per run and p95 detection latency (seconds) of each schedule."""

    classic_polls: float
    classic_p95: float
    learned_polls: float
    learned_p95: float


def race(draw: Draw, seed: int, runs: int = 1000, policy: PollPolicy | None = None) -> Race:
    """Run the same drawn run times through the classic loop and the learned model.

    The model starts empty and learns online from what its own polls saw (detection times, not
    true durations), as in the fleet; its first ``min_samples`` runs use the classic loop,
    ``policy.backoff``. Three generators seeded from ``seed`` draw the run times and each
    schedule's jitter, so a change to one schedule leaves the other's polls as they were.
    """
    model = RunTimes[tuple[str, str]](policy)
    durations = random.Random(seed)
    classic_rng, learned_rng = random.Random(seed + 10_000), random.Random(seed + 20_000)
    classic_polls, classic_latency, learned_polls, learned_latency = [], [], [], []
    for _ in range(runs):
        duration = draw(durations)
        polls, seen = classic_run(model.policy.backoff, duration, classic_rng)
        classic_polls.append(polls)
        classic_latency.append(seen - duration)
        polls, seen = learned_run(model, _KEY, duration, learned_rng)
        learned_polls.append(polls)
        learned_latency.append(seen - duration)
    return Race(
        classic_polls=statistics.fmean(classic_polls),
        classic_p95=quantile(sorted(classic_latency), 0.95),
        learned_polls=statistics.fmean(learned_polls),
        learned_p95=quantile(sorted(learned_latency), 0.95),
    )
