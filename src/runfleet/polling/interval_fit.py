"""A lognormal of run times fitted to what polls saw, and a check that it predicts them.

Polls never see when a run finished, only that it finished between the last poll that found
it working and the poll that found it done: ``(0, t]`` if that was the first poll, exact if a
webhook said when. Whatever schedule placed the polls (the classic loop's, a scout's, a held
run's, the learned one), these intervals bound the run times without bias, so
:class:`IntervalFit` fits a lognormal to them by maximum likelihood (expectation-maximisation
on their logarithms) instead of reading quantiles off the poll times, which would put the
lower tail where the first polls happened to be.

A fit is trusted only while it predicts what the first polls see. Each run is compared with
what the fit of its moment said of its first poll; when more runs are found done there than
predicted (over the window, or far beyond chance among the latest), the lower tail is heavier
than a lognormal's or the runs changed, and :attr:`LognormalFit.surprise` says which.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

__all__ = ["IntervalFit", "LognormalFit", "Surprise"]

Surprise = Literal["recent", "window"]
"""``"window"``: a small excess of runs found done at their first poll over all samples;
``"recent"``: a large one among the latest (a sudden change, such as runs that got faster)."""

_FIT_MIN_OBSERVED = 10
"""Runs seen working before they were seen done, before a fit is tried."""
_EM_FIRST = 30
"""Fitting steps the first time; later fits start from the previous one and take a few."""
_EM_STEPS = 2
_REFIT_SHARE = 1 / 16
_MIN_SIGMA = 0.02
_FAR = 40.0
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2 = 1.0 / _SQRT2
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_RECENT = 16
_RECENT_TOLERANCE = 0.25
"""The same check over the latest ``_RECENT`` samples: looser, since they are few."""
_NORMAL = NormalDist()
_MOST_QUANTILE = 0.999


@dataclass(frozen=True, slots=True)
class LognormalFit:
    """A lognormal of a key's run times: the mean and deviation of their logarithm."""

    mu: float
    sigma: float
    surprise: Surprise | None
    """What the first polls found that it did not predict; ``None``: it can be trusted."""

    def quantile(self, q: float) -> float:
        return math.exp(self.mu + _NORMAL.inv_cdf(q) * self.sigma)

    def done_by(self, seconds: float) -> float:
        """Return the share of runs done within ``seconds``."""
        return _cdf((math.log(seconds) - self.mu) / self.sigma) if seconds > 0 else 0.0

    def beyond(self, top: float, u: float) -> float:
        """Return the ``u`` quantile of runs longer than ``top``: where the fit places runs
        still working past every run seen done (never its last thousandth, which is far)."""
        done = self.done_by(top)
        return self.quantile(min(done + u * (1 - done), _MOST_QUANTILE))


class IntervalFit:
    """The latest ``size`` run times of one key as intervals, and their lognormal fit.

    ``tolerance`` is the share of runs that may be found done at their first poll beyond what
    the fits predicted, over the window, before the fit is distrusted
    (:attr:`~runfleet.polling.policy.PollPolicy.fit_tolerance`).
    """

    __slots__ = ("checked", "fit", "logs", "predicted", "recent", "since_fit", "tolerance")

    def __init__(self, size: int, *, tolerance: float) -> None:
        self.tolerance = tolerance
        # When each run finished, as well as it is known, in logarithms as the fit reads them:
        # between ``lower`` and ``upper`` (``lower`` -inf if it was done at its first poll,
        # ``lower == upper`` if a webhook said when).
        self.logs: deque[tuple[float, float]] = deque(maxlen=size)
        # For the same runs: whether the first poll found it done, and how likely the fit of the
        # time said that was (NaN: no fit yet, or no poll placed it).
        self.checked: deque[tuple[bool, float]] = deque(maxlen=size)
        self.fit: LognormalFit | None = None
        self.since_fit = 0
        # Over the runs of ``checked`` that a fit predicted: how many, how many were found done
        # at the first poll, and how many the fits expected; and the latest of them.
        self.predicted = _Tally()
        self.recent: deque[tuple[bool, float]] = deque(maxlen=_RECENT)

    def add(self, low: float | None, high: float, first_at: float | None) -> None:
        """Record that a run finished between ``low`` (``None``: at any time before, as found
        by its first poll) and ``high`` seconds, the first poll having been at ``first_at``
        (``None``: not known, or a webhook prompted it)."""
        fit = self.fit
        predicted = math.nan if fit is None or first_at is None else fit.done_by(first_at)
        upper = math.log(high) if high > 0 else -_FAR
        if low is None:
            lower = -math.inf
        elif low < high:
            lower = math.log(low) if low > 0 else -math.inf
        else:
            lower = upper
        self.logs.append((lower, upper))
        checked, done_first = self.checked, low is None
        if len(checked) == checked.maxlen:
            old_done, old = checked[0]
            if old == old:
                self.predicted.add(old_done, old, -1)
        checked.append((done_first, predicted))
        if predicted == predicted:  # not NaN
            self.predicted.add(done_first, predicted, 1)
            self.recent.append((done_first, predicted))
        self.since_fit += 1

    def refit(self, working: Sequence[float] = (), weight: float = 1.0) -> LognormalFit | None:
        """Return the fit, refitted if enough has been observed since the last.

        Refitting every ``1/_REFIT_SHARE`` of the window keeps an observation cheap (tens of
        µs) while the fit still follows the runs; whether it is trusted is checked on every
        one. ``None`` while fewer than ``_FIT_MIN_OBSERVED`` runs were seen working before they
        were seen done: with only "done before the first poll" to go on, nothing places the fit.
        ``working``: ages at which runs still working were last seen so, each standing for
        ``weight`` runs: they took at least that long (:mod:`.survival` says when they count).
        """
        logs, previous = self.logs, self.fit
        if working or previous is None or self.since_fit >= max(1, int(len(logs) * _REFIT_SHARE)):
            seen = [upper for lower, upper in logs if lower > -math.inf]
            if len(seen) < _FIT_MIN_OBSERVED:
                self.fit = None
                return None
            if previous is None:
                mu, sigma, steps = math.fsum(seen) / len(seen), 0.5, _EM_FIRST
            else:
                mu, sigma, steps = previous.mu, previous.sigma, _EM_STEPS
            censored = [math.log(age) for age in working if age > 0]
            for _ in range(steps):
                mu, sigma = _em_step(logs, mu, sigma, censored, weight)
            self.since_fit = 0
        else:
            mu, sigma = previous.mu, previous.sigma
        self.fit = LognormalFit(mu, sigma, self.surprise())
        return self.fit

    def surprise(self) -> Surprise | None:
        """Say whether the fits predicted how many runs were already done at their first poll.

        Each run is checked against the fit of the moment it finished, over all samples and
        over the latest; ``None`` if both hold. An excess means the lower tail is heavier than
        a lognormal (many quick failures, a uniform spread) or the runs changed: a first poll
        read off the fit would come too late.
        """
        recent = self.recent
        done = sum(1 for censored, _ in recent if censored)
        expected = math.fsum(p for _, p in recent)
        spread = math.sqrt(math.fsum(p * (1 - p) for _, p in recent))
        # Three standard deviations as well: with a first poll where a third of runs are done,
        # a quarter of 16 is well within chance, and a false alarm halves the first poll.
        if done > expected + max(_RECENT_TOLERANCE * len(recent), 3 * spread):
            return "recent"
        tally = self.predicted
        if tally.runs and tally.done > tally.expected + self.tolerance * tally.runs:
            return "window"
        return None


class _Tally:
    """Running sums over a window: runs, runs found done at the first poll, runs expected so."""

    __slots__ = ("done", "expected", "runs")

    def __init__(self) -> None:
        self.runs = self.done = 0
        self.expected = 0.0

    def add(self, done: bool, expected: float, sign: int) -> None:
        self.runs += sign
        self.done += sign * done
        self.expected += sign * expected


def _em_step(
    logs: Sequence[tuple[float, float]],
    mu: float,
    sigma: float,
    censored: Sequence[float] = (),
    weight: float = 1.0,
) -> tuple[float, float]:
    """One expectation-maximisation step of a normal fit of log run times known by interval.

    Each run's log time is replaced by its expectation (and that of its square) under the
    current fit, truncated to its interval; then the mean and deviation are re-estimated.
    Every poll schedule (the classic loop's, a scout's, a held run's, the learned one) only
    bounds when a run finished, so this reads all of them without bias. The normal's
    functions are inlined: this loop is most of what learning costs.
    """
    erfc, exp, inv = math.erfc, math.exp, 1.0 / sigma
    total = total_sq = 0.0
    for lower, upper in logs:
        if lower >= upper:
            y, y2 = upper, upper * upper
        else:
            beta = (upper - mu) * inv
            mass = 0.5 * erfc(-beta * _INV_SQRT2)
            pb = exp(-0.5 * beta * beta) * _INV_SQRT_2PI
            a_pa = pa = 0.0
            alpha = -math.inf
            if lower > -math.inf:
                alpha = (lower - mu) * inv
                mass -= 0.5 * erfc(-alpha * _INV_SQRT2)
                pa = exp(-0.5 * alpha * alpha) * _INV_SQRT_2PI
                a_pa = alpha * pa
            if mass < 1e-12:  # far in a tail: the interval's end nearest the fit will do
                y = upper if beta < 0 else lower
                y2 = y * y
            else:
                mean = (pa - pb) / mass
                y = mu + sigma * mean
                y2 = (
                    mu * mu
                    + 2 * mu * sigma * mean
                    + sigma * sigma * (1.0 + (a_pa - beta * pb) / mass)
                )
        total += y
        total_sq += y2
    for lower in censored:  # still working at ``lower``: the run's time is above it
        alpha = (lower - mu) * inv
        mass = 0.5 * erfc(alpha * _INV_SQRT2)
        if mass < 1e-12:
            y, y2 = lower, lower * lower
        else:
            pa = exp(-0.5 * alpha * alpha) * _INV_SQRT_2PI
            mean = pa / mass
            y = mu + sigma * mean
            y2 = mu * mu + 2 * mu * sigma * mean + sigma * sigma * (1.0 + alpha * pa / mass)
        total += weight * y
        total_sq += weight * y2
    n = len(logs) + weight * len(censored)
    mu = total / n
    return mu, max(math.sqrt(max(total_sq / n - mu * mu, 0.0)), _MIN_SIGMA)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)
