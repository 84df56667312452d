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
poll, and a plan read off it would move the first poll later and later. The estimate spreads
them below it as the caller's fit guesses (the lognormal's share done by each time), and the
share found there beyond the fit's prediction evenly from 0 s. A guess is blind to a sharp
lower edge (runs of 4-12 s, none before 4 s, many just after), so the schedule probes: every
eighth run's first poll goes at a random time up to two gaps below the comb's, and what those
find (done or not, a current-status observation) is a floor under the guess
(:func:`_lower_cdf`): never fewer runs done by a time than the probes saw.

Run times drift (a model gets slower in the afternoon). Each new run is compared with the
median of the estimate: under no change, as many land above it as below. When ``_SHIFTED`` of
the latest ``_RECENT`` decided runs fall on one side (about 2 in 100,000 by chance), the older
samples describe runs that no longer happen and are forgotten; the estimate restarts from the
latest ``_RECENT``. Not while a key's first window fills: its first runs started together and
end fastest first, which the sign test reads as runs getting slower.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Callable, Sequence

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
_MIN_PROBES = 8
"""Probes (first polls placed early on purpose) before what they saw shapes the lower tail."""


class CompletionSketch:
    """The latest ``size`` run times of one key as intervals, and their distribution.

    Call :meth:`add` per run seen done; :meth:`points` returns the estimate as equally likely
    run times (its quantiles), or ``None`` before there is enough to go on.
    """

    __slots__ = (
        "_bracketed", "_median", "_points", "_signs", "_since_fit", "probed", "probes", "samples"
    )  # fmt: skip

    def __init__(self, size: int) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=size)
        """``(low, high)``: the run finished after ``low`` (0: at any time) and by ``high``."""
        self._bracketed = 0
        self._points: list[float] | None = None
        self._median: float | None = None
        self._since_fit = 0
        self._signs: deque[int] = deque(maxlen=_RECENT)
        self.probed: deque[bool] = deque(maxlen=size)
        """Per sample: whether its run's first poll was a probe (placed early on purpose, at a
        random time below where the plan's first poll goes)."""
        self.probes: deque[tuple[float, bool]] = deque(maxlen=size // 4)
        """``(at, done)`` of the latest probes, kept when older samples are forgotten: they
        only ever add early runs to the fit's guess (:meth:`points`), so stale ones err on the
        side of polling early, and a change that restarts the samples keeps its floor."""

    def add(
        self, low: float | None, high: float, probe: float | None = None, watch: bool = True
    ) -> bool:
        """Record a run that finished after ``low`` seconds (``None``: found done at its first
        poll) and by ``high``; ``probe``: when its first poll was, if that was a probe.
        Return whether the runs changed and older ones were forgotten; never unless
        ``watch``: runs that started together end in order of their times, fastest first,
        which is no change."""
        lower = 0.0 if low is None else min(low, high)
        if len(self.samples) == self.samples.maxlen and self.samples[0][0] > 0:
            self._bracketed -= 1
        self.samples.append((lower, high))
        self.probed.append(probe is not None)
        if probe is not None:
            self.probes.append((probe, low is None))
        self._bracketed += lower > 0
        self._since_fit += 1
        median = self._median
        if median is None or not watch:
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
        probed = list(self.probed)[-_RECENT:]
        self.probed.clear()
        self.probed.extend(probed)
        self._bracketed = sum(1 for lo, _ in latest if lo > 0)
        signs.clear()
        self._points = self._median = None
        return True

    def points(
        self,
        done_by: Callable[[float], float] | None = None,
        excess: float = 1.0,
        working: tuple[Sequence[float], float] | None = None,
        beyond: Callable[[float, float], float] | None = None,
    ) -> list[float] | None:
        """Return ``_POINTS`` run times, the estimate's quantiles at ``(i + 0.5) / _POINTS``,
        sorted; refitted when enough was added since the last fit. ``None`` while fewer than
        ``_MIN_BRACKETED`` runs were seen working before they were seen done.

        ``working``: the ages at which runs still working were last seen so, and how many runs
        each stands for; each is a run that takes longer than its age (right-censored), so a
        cohort's slow runs count before they end (:mod:`.survival`). Past the longest run seen
        done the estimate only knows that they take longer: ``beyond(top, u)`` places them
        (the ``u`` quantile of runs longer than ``top``, as a fit guesses)."""
        if self._bracketed < _MIN_BRACKETED:
            return None
        if self.fresh():
            lower = _lower_cdf(self.samples, self.probed, self.probes)
            if lower is not None:
                done_by = _floored(done_by, lower) if done_by is not None else lower
            self._points = _quantile_points(self.samples, done_by, excess, working)
            if working is not None and beyond is not None:
                _extend(self._points, max(high for _, high in self.samples), beyond)
            self._median = self._points[_POINTS // 2]
            self._since_fit = 0
        return self._points

    def fresh(self) -> bool:
        """Return whether the next :meth:`points` refits (the plan read off it may change)."""
        return self._points is None or self._since_fit >= max(1, len(self.samples) * _REFIT_SHARE)


def _quantile_points(
    samples: deque[tuple[float, float]],
    done_by: Callable[[float], float] | None,
    excess: float,
    working: tuple[Sequence[float], float] | None = None,
) -> list[float]:
    """Estimate the distribution of the intervals on geometric bins; return its quantiles.

    Runs seen working before they were seen done place the estimate (Turnbull's iteration).
    A run found done at its first poll ``t`` is spread below ``t`` as ``done_by`` (the
    lognormal fit's share done by a time) says, except an ``excess`` share of it (the runs
    found done there beyond what the fit predicted), spread evenly from 0 s. A run still
    working at ``age`` covers every bin past it, up to twice the oldest age seen; how it is
    spread past the longest run seen done is :func:`_extend`'s.
    """
    seen = [(low, high) for low, high in samples if low > 0]
    ages, each = working if working is not None else ((), 0.0)
    lo = min(low for low, _ in seen) / _BIN_RATIO
    # Runs still working may take longer than any seen: room past both for them.
    hi = max(max(high for _, high in samples), max(ages, default=0.0)) * (2.0 if ages else 1.0001)
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
    spans: defaultdict[tuple[int, int], float] = defaultdict(float)
    for low, high in seen:
        last = min(max(bisect_right(edges, high) - 1, 0), count - 1)
        first, end = bisect_right(centres, low), bisect_right(centres, high) - 1
        first, last = (first, end) if low < high and first <= end else (last, last)
        spans[(first, last + 1)] += 1
    for age in ages:
        spans[(min(bisect_right(centres, age), count - 1), count)] += each
    placed = len(seen) + each * len(ages)  # runs the iteration places
    mass = [1.0 / count] * count
    for _ in range(_ITERATIONS):
        new = [0.0] * count
        for (a, b), n in spans.items():
            scale = n / (sum(mass[a:b]) * placed)
            for j in range(a, b):
                new[j] += mass[j] * scale
        mass = new
    # Bin 0 is the atom at 0 s; bin j + 1 is ``edges[j]`` to ``edges[j + 1]``.
    runs = len(samples) + each * len(ages)
    weights = [fixed[0] / runs] + [(fixed[j + 1] + placed * mass[j]) / runs for j in range(count)]
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


def _extend(points: list[float], top: float, beyond: Callable[[float, float], float]) -> None:
    """Spread the points past ``top`` (runs still working, which Turnbull's estimate puts
    at the oldest age seen, since nothing says how much longer they take) as ``beyond``
    says: a cohort's first plan read them as ending there, and its classic p95 and gap with
    them (runs of 4 s planned a gap of 0.7 s for the first 50 of a hundred)."""
    first = bisect_right(points, top)
    count = len(points) - first
    for i in range(first, len(points)):
        points[i] = max(points[i], beyond(top, (i - first + 0.5) / count))


def _floored(
    fit: Callable[[float], float], floor: Callable[[float], float]
) -> Callable[[float], float]:
    return lambda t: max(fit(t), floor(t))


def _lower_cdf(
    samples: deque[tuple[float, float]],
    probed: deque[bool],
    probes: deque[tuple[float, bool]],
) -> Callable[[float], float] | None:
    """Return the share of runs done by a time below the plan's first poll, as the probes saw
    it, or ``None`` with fewer than ``_MIN_PROBES`` probes.

    Each probe is a current-status observation (done or not at a random time); the other
    first polls are one more, at the median time runs were found done there. Their maximum
    likelihood estimate is the isotonic regression of done on time (pool adjacent violators),
    joined by lines between the probes' blocks (each from its first time) and by a step to
    the first polls' point. A line to that point too moved runs of a fixed 2 s below 2 s, and
    the comb then polled them early and once more a gap later (p95 1.1-1.6 times the classic
    loop's); a step between the probes let a sharp lower edge through (uniform 4-12 s: 4 of 10
    seeds over the classic loop's p95, up to 1.09 times).
    """
    status = [(at, float(done), 1) for at, done in probes]  # (time, done, weight)
    firsts = [(low, high) for (low, high), probe in zip(samples, probed, strict=True) if not probe]
    at_first = [high for low, high in firsts if low <= 0]
    if len(status) < _MIN_PROBES or not at_first:
        return None
    at_first.sort()
    status.append((at_first[len(at_first) // 2], len(at_first) / len(firsts), len(firsts)))
    status.sort()
    blocks: list[list[float]] = []  # [weighted done, weight, first time, the first polls']
    for time, done, weight in status:
        blocks.append([done * weight, float(weight), time, float(weight == len(firsts))])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            done_sum, weight_sum, _, anchor = blocks.pop()
            blocks[-1][0] += done_sum
            blocks[-1][1] += weight_sum
            blocks[-1][3] += anchor
    starts = [b[2] for b in blocks]
    values = [b[0] / b[1] for b in blocks]
    joined = [not b[3] for b in blocks]  # a line to the next point, a step to the first polls'

    def done_by(t: float) -> float:
        i = bisect_right(starts, t)
        if i == 0:
            return 0.0
        if i == len(starts) or not joined[i]:
            return values[i - 1]
        a, b = starts[i - 1], starts[i]
        return values[i - 1] + (values[i] - values[i - 1]) * (t - a) / (b - a)

    return done_by
