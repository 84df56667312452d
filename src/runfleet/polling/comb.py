"""The cheapest comb of polls that detects runs as fast as the classic loop would.

Given a key's run times as equally likely points (:mod:`.completion_sketch`), the learned
schedule polls a comb: a first poll at ``start``, then every ``gap``. :func:`cheapest_comb`
picks the pair with the fewest expected polls per run whose 95th percentile of detection
latency stays within ``latency``; :func:`classic_p95` is that percentile for the classic loop
on the same runs, which is what the fleet promises not to exceed. This is the oracle's search
(``benchmarks/poll_bound.py``) run on what the fleet has learned instead of the truth.

Both are computed in closed form, not by simulation. A run finishing inside a gap whose length
is jittered uniformly in ``[g (1 - j), g (1 + j)]`` lands in a gap chosen in proportion to its
length, at a uniform point of it, so its latency exceeds ``x`` with probability
``E[(G - x)+] / g`` (:func:`_exceeds`). A run finishing before the first poll waits for it. The
comb's polls are the first plus, on average, ``(t - start) / gap + 1/2`` for a run of ``t``.
Pure: no clock, no I/O; about a millisecond on 128 points.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate

from .key_plan import Plan
from .latency_guard import classic_gap
from .schedule import Backoff

__all__ = ["cheapest_comb", "classic_p95", "probe_span"]

_QUANTILE = 0.95
_GAPS = 24
"""Gaps tried, from a third of the latency to the widest whose p95 can still meet it."""
_PROBE_GAPS = 2
"""Probes go from this many gaps below the comb's first poll to one gap below it: where what
is done decides the comb's p95 (four gaps cost the grid's sigma 0.3 cells 0.02-0.07 of the
oracle's polls for probes that found nothing done)."""


def _exceeds(x: float, gap: float, jitter: float, cap: float = float("inf")) -> float:
    """Return the chance that a run finishing inside a comb of ``gap`` waits over ``x``: gaps
    drawn uniformly in ``[gap (1 - j), gap (1 + j)]``, longer ones cut to ``cap``."""
    low, high = gap * (1 - jitter), gap * (1 + jitter)
    top = min(high, cap)
    if top <= 0:
        return 0.0
    if high <= low:
        return max(top - x, 0.0) / top
    clipped = (high - top) / (high - low)  # the share of gaps cut to ``top``
    mean = (top * top - low * low) / (2 * (high - low)) + top * clipped
    if x >= top:
        return 0.0
    over = ((top - x) ** 2 - (max(low, x) - x) ** 2) / (2 * (high - low))
    return (over + (top - x) * clipped) / mean


def classic_p95(points: Sequence[float], backoff: Backoff) -> float:
    """Return the classic loop's 95th percentile of detection latency on runs of ``points``."""
    gaps = [classic_gap(backoff, t) for t in points]
    low, high = 0.0, max(gaps) * (1 + backoff.jitter)
    for _ in range(40):
        x = (low + high) / 2
        share = sum(_exceeds(x, g, backoff.jitter, backoff.cap) for g in gaps) / len(gaps)
        low, high = (x, high) if share > 1 - _QUANTILE else (low, x)
    return high


def cheapest_comb(
    points: Sequence[float], latency: float, jitter: float, least_gap: float, most_early: float
) -> tuple[float, float]:
    """Return ``(start, gap)``: the comb with the fewest expected polls on runs of sorted
    ``points`` whose p95 detection latency is at most ``latency``; gaps at least
    ``least_gap``, and at most a ``most_early`` share of runs done before the first poll
    (below it, no poll sees how they are spread: the estimate must keep seeing it)."""
    n = len(points)
    suffix = [*list(accumulate(reversed(points)))[::-1], 0.0]  # sum of points[i:]
    best = (float("inf"), max(points[0], least_gap), max(latency, least_gap))
    widest = latency / (1 - jitter) if jitter < 1 else latency
    for k in range(_GAPS):
        gap = max(least_gap, latency / 3 + (widest - latency / 3) * k / (_GAPS - 1))
        late = _exceeds(latency, gap, jitter)
        for start in points:
            start = max(start, gap)
            waiting = bisect_left(points, start - latency)  # done over `latency` before it
            done = bisect_right(points, start)
            if waiting / n > 1 - _QUANTILE or done / n > most_early:
                break  # later starts only leave more runs waiting
            if waiting / n + (1 - done / n) * late > 1 - _QUANTILE:
                continue
            after = n - done
            polls = 1 + (suffix[done] - after * start) / (n * gap) + 0.5 * after / n
            if polls < best[0]:
                best = (polls, start, gap)
    return best[1], best[2]


def probe_span(plan: Plan, least: float) -> tuple[float, float] | None:
    """Return the span a comb's probes go in (first polls placed early on purpose, so that the
    runs done below its first poll are seen), or ``None`` when its first poll is under two
    gaps in: the comb itself then sees the lower tail."""
    if plan.start < 2 * plan.gap:
        return None
    return max(plan.start - _PROBE_GAPS * plan.gap, least), plan.start - plan.gap
