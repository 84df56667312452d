"""A non-parametric estimate of a key's run times from what polls saw, and when it changed.

Polls never see when a run finished, only an interval: ``(0, t]`` when the first poll found it
done, ``(previous, t]`` after a poll that found it working, exact when a webhook said when.
:class:`CompletionSketch` keeps the latest of these intervals and estimates the distribution
they came from without assuming its shape (a lognormal, one mode): the nonparametric maximum
likelihood estimate for interval-censored data (Turnbull's self-consistency iteration) on
geometrically spaced bins, about 8 % wide, over the range seen. A mixture of fast and slow runs
or a lower tail heavier than a lognormal's is then what the polls are planned on, not what a
fit smooths away. Beyond the longest run seen it claims nothing: the plan keeps its gap until
there, then backs off (the safe tail, :mod:`runfleet.polling.learning`).

What finished before the first poll is only known to have finished before it, and where
before it no poll says: a maximum likelihood estimate would put those runs just under the first
poll, and a plan read off it would move the first poll later and later. The estimate keeps
them apart as an atom at 0 s, so the plan counts each as having waited for its first poll.

Run times drift (a model gets slower in the afternoon). Each new run is compared with the
median of the estimate: under no change, as many land above it as below. When ``_SHIFTED`` of
the latest ``_RECENT`` decided runs fall on one side (about 2 in 100,000 by chance), the older
samples describe runs that no longer happen and are forgotten; the estimate restarts from the
latest ``_RECENT``. Pure: no clock, no I/O.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable

__all__ = ["CompletionSketch"]

_BIN_RATIO = 1.08
_MAX_BINS = 96
_ITERATIONS = 40
_MIN_BRACKETED = 10
"""Runs seen working before they were seen done, before the estimate is used at all."""
_REFIT_SHARE = 1 / 16
_RECENT = 32
_SHIFTED = 28
_POINTS = 128


class CompletionSketch:
    """The latest ``size`` run times of one key as intervals, and their distribution.

    Call :meth:`add` per run seen done; :meth:`points` returns the estimate as equally likely
    run times (its quantiles), or ``None`` before there is enough to go on.
    """

    __slots__ = ("_bracketed", "_median", "_points", "_signs", "_since_fit", "samples")

    def __init__(self, size: int) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=size)
        """``(low, high)``: the run finished after ``low`` (0: at any time) and by ``high``."""
        self._bracketed = 0
        self._points: list[float] | None = None
        self._median: float | None = None
        self._since_fit = 0
        self._signs: deque[int] = deque(maxlen=_RECENT)

    def add(self, low: float | None, high: float) -> bool:
        """Record a run that finished after ``low`` seconds (``None``: found done at its first
        poll) and by ``high``; return whether the runs changed and older ones were forgotten."""
        lower = 0.0 if low is None else min(low, high)
        if len(self.samples) == self.samples.maxlen and self.samples[0][0] > 0:
            self._bracketed -= 1
        self.samples.append((lower, high))
        self._bracketed += lower > 0
        self._since_fit += 1
        median = self._median
        if median is None:
            return False
        if lower >= median:
            self._signs.append(1)
        elif high <= median:
            self._signs.append(-1)
        else:
            return False
        signs = self._signs
        if len(signs) < _RECENT or abs(sum(signs)) < 2 * _SHIFTED - _RECENT:
            return False
        latest = list(self.samples)[-_RECENT:]
        self.samples.clear()
        self.samples.extend(latest)
        self._bracketed = sum(1 for lo, _ in latest if lo > 0)
        signs.clear()
        self._points = self._median = None
        return True

    def points(
        self, done_by: Callable[[float], float] | None = None, excess: float = 1.0
    ) -> list[float] | None:
        """Return ``_POINTS`` run times, the estimate's quantiles at ``(i + 0.5) / _POINTS``,
        sorted; refitted when enough was added since the last fit. ``None`` while fewer than
        ``_MIN_BRACKETED`` runs were seen working before they were seen done."""
        if self._bracketed < _MIN_BRACKETED:
            return None
        if self._points is None or self._since_fit >= max(1, len(self.samples) * _REFIT_SHARE):
            self._points = _quantile_points(self.samples, done_by, excess)
            self._median = self._points[_POINTS // 2]
            self._since_fit = 0
        return self._points

    def fresh(self) -> bool:
        """Return whether the next :meth:`points` refits (the plan read off it may change)."""
        return self._points is None or self._since_fit >= max(1, len(self.samples) * _REFIT_SHARE)


def _quantile_points(
    samples: deque[tuple[float, float]], done_by: Callable[[float], float] | None, excess: float
) -> list[float]:
    """Estimate the distribution of the intervals on geometric bins; return its quantiles.

    Runs seen working before they were seen done place the estimate (Turnbull's iteration).
    A run found done at its first poll ``t`` is spread below ``t`` as ``done_by`` (the
    lognormal fit's share done by a time) says, except an ``excess`` share of it (the runs
    found done there beyond what the fit predicted), spread evenly from 0 s.
    """
    seen = [(low, high) for low, high in samples if low > 0]
    lo = min(low for low, _ in seen) / _BIN_RATIO
    hi = max(high for _, high in samples) * 1.0001
    count = max(2, min(_MAX_BINS, math.ceil(math.log(hi / lo) / math.log(_BIN_RATIO))))
    ratio = (hi / lo) ** (1 / count)
    edges = [lo * ratio**i for i in range(count + 1)]
    centres = [math.sqrt(a * b) for a, b in itertools.pairwise(edges)]
    # Mass of runs found done at their first poll: in the atom (below ``lo``) or bins below.
    fixed = [0.0] * (count + 1)
    below = [0.0, *(done_by(e) for e in edges)] if done_by is not None else None
    even = [0.0, *edges]
    for low, high in samples:
        if low > 0:
            continue
        last = min(max(bisect_right(edges, high) - 1, 0), count - 1) + 1
        for cdf, weight in ((below, 1 - excess), (even, excess)):
            total = cdf[last + 1] if cdf is not None else 0.0
            if total <= 0 or cdf is None:
                fixed[0] += weight
                continue
            for j in range(last + 1):
                fixed[j] += weight * (cdf[j + 1] - cdf[j]) / total
    # Each interval covers the bins whose centre lies inside it, or else the bin of its end.
    spans: Counter[tuple[int, int]] = Counter()
    for low, high in seen:
        last = min(max(bisect_right(edges, high) - 1, 0), count - 1)
        first, end = bisect_right(centres, low), bisect_right(centres, high) - 1
        first, last = (first, end) if low < high and first <= end else (last, last)
        spans[(first, last + 1)] += 1
    mass = [1.0 / count] * count
    for _ in range(_ITERATIONS):
        new = [0.0] * count
        for (a, b), n in spans.items():
            scale = n / (sum(mass[a:b]) * len(seen))
            for j in range(a, b):
                new[j] += mass[j] * scale
        mass = new
    # Bin 0 is the atom at 0 s; bin j + 1 is ``edges[j]`` to ``edges[j + 1]``.
    weights = [fixed[0] / len(samples)] + [
        (fixed[j + 1] + len(seen) * mass[j]) / len(samples) for j in range(count)
    ]
    out: list[float] = []
    cumulative, j = 0.0, 0
    for i in range(_POINTS):
        q = (i + 0.5) / _POINTS
        while j < count and cumulative + weights[j] < q:
            cumulative += weights[j]
            j += 1
        if j == 0:
            out.append(0.0)
            continue
        inside = (q - cumulative) / weights[j] if weights[j] > 0 else 0.5
        out.append(edges[j - 1] * ratio ** min(max(inside, 0.0), 1.0))
    return out
