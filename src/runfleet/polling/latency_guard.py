"""The p95 guard: spend polls on a key when its detection latency loses to the classic loop's.

The learned schedule saves polls by spacing them where runs finish; the promise that comes with
it is a detection latency no worse than the classic loop's. The fleet cannot see its latency
(it does not know when a run finished) but it knows an upper bound per run: a run seen done
after a poll that found it working finished inside that gap, and is detected on average half a
gap late, at worst a whole one. The classic loop's gap for a run finishing at the same age is
known exactly (its gaps grow by ``factor`` up to ``cap``). So the guard compares the 95th
percentile of the gaps that caught the latest runs with that of the classic loop's gaps at the
same ages, which is how their p95 latencies compare when runs finish anywhere in a gap.

When the learned gaps are wider, ``squeeze`` (a factor on every learned gap and on the cap)
narrows them to the classic loop's, never below a quarter. When they are well inside, it
widens them to ``_RELAX_MARGIN`` of the classic loop's, at most twice as wide: the promise is
"no worse than the classic loop", and latency bought far below it costs requests for nothing
(offline grid, 500 runs: on runs of 1-4 s requests fell 0-16 %, on runs of 1 s, sigma 1.2,
from 1.04 to 0.87 of the classic loop's; their p95 went from 0.44-0.73 of its to 0.65-0.80;
the rest kept theirs). The margin is room for what the gaps do not show: the round trip, and
where in a gap runs finish. Each gap is remembered as it would have been unsqueezed (divided
by the squeeze it was placed under), so the squeeze is solved for directly rather than
stepped, which would overshoot while the window still holds gaps placed before it.

Runs of a minute or more need it: the learned cap is a tenth of their median, wider than the
classic loop's 5 s (on lognormal runs of 60 s, sigma 0.3 to 1.2, the p95 went from 1.14-1.18
to 0.96-0.98 of the classic loop's, ``bench.race``, 500 runs, seeds 0-2), and a drift to
slower runs puts them in the backing-off tail. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import deque

from ..stats import quantile
from .schedule import Backoff

__all__ = ["LatencyGuard"]

_WINDOW = 48
"""Latest detections compared: enough for a 95th percentile to mean something, few enough to
follow a drift within a few dozen runs."""
_MIN_SEEN = 16
_QUANTILE = 0.95
_FLOOR = 0.25
_CEILING = 2.0
_RELAX_MARGIN = 0.6
"""Widened, the p95 gap is this share of the classic loop's. ``benchmarks/guard_margin.py`` (5
seeds of 1,000 runs of five shapes): at 1.0 seven p95s of 25 were over the classic loop's (at
most 1.07 of it), at 0.7 two (1.02), at 0.6 none (0.93)."""


class LatencyGuard:
    """Narrow a key's learned gaps while they detect runs later than the classic loop would,
    and widen them while they detect runs much sooner."""

    __slots__ = ("_backoff", "_classic", "_ours", "squeeze")

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._ours: deque[float] = deque(maxlen=_WINDOW)
        self._classic: deque[float] = deque(maxlen=_WINDOW)
        self.squeeze = 1.0
        """The factor on every learned gap, in ``[0.25, 2]``."""

    def observe(self, age: float, gap: float) -> None:
        """Note a run seen done at ``age`` by a learned poll ``gap`` after the last that found
        it working; adjust :attr:`squeeze`."""
        self._ours.append(gap / self.squeeze)
        self._classic.append(classic_gap(self._backoff, age))
        if len(self._ours) < _MIN_SEEN:
            return
        ours = quantile(sorted(self._ours), _QUANTILE)
        classic = quantile(sorted(self._classic), _QUANTILE)
        ratio = classic / ours if ours > 0 else 1.0
        if ratio < 1.0:
            self.squeeze = max(_FLOOR, ratio)
        else:  # inside: widen, keeping the margin, never narrowing
            self.squeeze = min(_CEILING, max(1.0, _RELAX_MARGIN * ratio))


def classic_gap(backoff: Backoff, age: float) -> float:
    """Return the gap between the classic loop's two polls around ``age`` (jitter aside)."""
    at, gap = 0.0, backoff.initial
    while at + gap <= age and gap < backoff.cap:
        at += gap
        gap = min(gap * backoff.factor, backoff.cap)
    return min(gap, backoff.cap)
