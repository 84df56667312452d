"""What the runs still working say about run times: a cohort's slow runs, before they end.

A batch starts a hundred runs of one model together. The first twenty seen done, which teach
the learned schedule, are the twenty fastest of the hundred: read alone, they say runs take
less time than they do, and the next hundred are polled too early. The eighty still working
say how: each ran at least until the last poll that found it working. Survival analysis counts
such runs as *censored* at that age, and the Kaplan-Meier estimate reads the run times of the
whole cohort off both; the lognormal fit counts them the same way
(:meth:`~runfleet.polling.interval_fit.IntervalFit.refit`). On the simulator's runs of 4 s
(500, 100 in flight) the second hundred still cost 2.1-2.8 polls a run against 1.6-1.9 for
the rest, with this or without it, within what one run to the next varies: most of it is
not a biased fit's, and what is has not been measured apart from the noise.

That reading is sound while the runs seen done are all the runs of the key that ended: once
the model's window forgets the oldest, the runs still working stand for more than the window
holds (with 10,000 in flight and 256 kept, they would outweigh it forty to one), so
:class:`~runfleet.polling.learning.RunTimes` asks for them only until its window first fills,
the first waves of a key, when the bias is.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

__all__ = ["WorkingRuns", "with_working"]


class _Keyed(Protocol):
    key: int


R = TypeVar("R", bound=_Keyed)

_SAMPLE = 256
"""Runs still working read at one completion: a random sample of them, each weighted for the
runs it stands for, keeps a completion's cost flat with tens of thousands in flight."""


def with_working(
    done: Sequence[float], working: Sequence[float], weight: float
) -> tuple[list[float], float]:
    """Return as many run times as ``done``, spread as the Kaplan-Meier estimate says, and the
    share of the runs, done and working, that were seen done.

    Args:
        done: sorted times of the runs seen done.
        working: ages at which the runs still working were last seen so, in any order.
        weight: how many runs each of ``working`` stands for (a sample stands for many).

    Runs still working past every run seen done go at the oldest age seen working, the least
    they take. Runs are last seen working a poll's gap before now, so the estimate still
    leans short: a trusted lognormal fit, which counts them the same way, is read instead
    (:meth:`~runfleet.polling.interval_fit.IntervalFit.refit`).

    The share seen done says how far to trust the result without a fit: a cohort released at
    one age (a scout seen done) is seen done and working at nearly the same ages, and there
    the estimate places every run by the last one seen done, however many are working.
    """
    if not working or not done:
        return list(done), 1.0
    ages = sorted(working)
    n, survival = len(done), 1.0
    cdf: list[tuple[float, float]] = []
    i = 0
    while i < n:
        t = done[i]
        j = bisect.bisect_right(done, t, i)
        # At risk at t: runs done at t or later, and runs seen working at t or later.
        at_risk = (n - i) + weight * (len(ages) - bisect.bisect_left(ages, t))
        survival *= 1.0 - (j - i) / at_risk
        cdf.append((1.0 - survival, t))
        i = j
    oldest = max(done[-1], ages[-1])
    out, k = [], 0
    for m in range(n):
        q = (m + 0.5) / n
        while k < len(cdf) and cdf[k][0] < q:
            k += 1
        out.append(cdf[k][1] if k < len(cdf) else oldest)
    return out, n / (n + weight * len(ages))


class WorkingRuns(Generic[R]):
    """The runs of each key still in a phase of it, for a sample of them when one ends.

    Kept in a list per key with each run's index, so that adding, removing and sampling are
    O(1) per run whatever the number in flight.
    """

    __slots__ = ("_index", "_runs")

    def __init__(self) -> None:
        self._runs: dict[object, list[R]] = {}
        self._index: dict[int, tuple[object, int]] = {}  # run key: its key, its place

    def add(self, key: object, run: R) -> None:
        """Count ``run`` as working under ``key`` (moving it if it was under another)."""
        at = self._index.get(run.key)
        if at is not None:
            if at[0] == key:
                return
            self.remove(run)
        runs = self._runs.setdefault(key, [])
        self._index[run.key] = (key, len(runs))
        runs.append(run)

    def remove(self, run: R) -> None:
        """Forget ``run`` (it was seen done, restarted or ended); a run not counted is fine."""
        at = self._index.pop(run.key, None)
        if at is None:
            return
        key, i = at
        runs = self._runs[key]
        last = runs.pop()
        if last is not run:
            runs[i] = last
            self._index[last.key] = (key, i)
        if not runs:
            del self._runs[key]

    def sample(self, key: object, rng: random.Random) -> tuple[list[R], float]:
        """Return up to ``_SAMPLE`` runs of ``key`` and how many runs each stands for."""
        runs = self._runs.get(key, [])
        if len(runs) <= _SAMPLE:
            return list(runs), 1.0
        return rng.sample(runs, _SAMPLE), len(runs) / _SAMPLE

    def __len__(self) -> int:
        return len(self._index)
