"""How runs are polled: the settings of the classic loop and of the learned schedule.

:class:`PollPolicy` is what a user tunes (``Fleet(policy=...)``) and what
:class:`~runfleet.polling.learning.RunTimes` reads; it holds settings and their checks, no
state. Scaling it in time is here too, so that every caller running against a time-scaled
simulator (the bench, a batch) scales the same fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .schedule import Backoff

__all__ = ["PollPolicy"]


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How runs are polled: the classic backoff, and how the learned schedule uses it.

    Raises:
        ValueError: if a field is out of range (each message names the field).
    """

    backoff: Backoff = field(default_factory=Backoff)
    """The classic loop, used until a key is learned; its jitter, floor, cap and factor also
    shape the learned schedule."""
    latency_target: float | None = None
    """Seconds between polls where runs usually finish; ``None`` derives it from the median."""
    latency_fraction: float = 0.35
    """The gap as a fraction of the learned median when ``latency_target`` is ``None``. On runs
    of 8 s (lognormal, sigma 0.3), 0.25 spends 0.41 of the classic loop's polls for 0.58 of its
    p95 detection latency; 0.35 spends 0.32 of them for 0.85 of it (means over 20 seeds,
    ``benchmarks/learned_race.py``)."""
    min_samples: int = 20
    """Completions of a key to observe before its learned schedule replaces the classic one."""
    max_samples: int = 256
    """Most recent observations kept per key and phase; older ones are forgotten."""
    early_share: float = 0.02
    """Share of runs allowed to finish more than about one gap before the first poll."""
    low_quantile: float = 0.1
    """Share of runs the fallback steers to be already done at the first poll."""
    high_quantile: float = 0.95
    """Where the evenly spaced window ends and backoff takes over."""
    stall_factor: float = 3.0
    """A run queued longer than this many times the learned 99th-percentile wait is stalled."""
    stall_floor: float = 30.0
    """Seconds queued before a run can be stalled, however short learned waits are."""
    stall_unlearned: float = 120.0
    """Seconds queued before a run is stalled while its key's queue waits are not learned."""
    max_keys: int = 1024
    """Keys remembered; the least recently observed is forgotten first."""
    time_unit: float = 1.0
    """Real seconds per second of the runs' time: 1 live, the scale against a time-scaled
    simulator. What is fixed in the runs' time (a completion window's length) is read in it."""
    fit_tolerance: float = 0.03
    """How many more runs (as a share) may be found done at the first poll than the lognormal
    fit predicts, over the latest ``max_samples``, before the fit is distrusted. Tight on
    purpose: on lognormal runs chance alone trips it on about one observation in eight, which
    costs about 4 % more polls, but without it a lower tail like a uniform spread from 0 s gets
    through, at up to 1.4 times the classic loop's p95 latency (``benchmarks/fit_alarms.py``)."""

    comb: bool = False
    """Plan a learned key's polls as the cheapest comb (a first poll, then one gap) whose p95
    detection latency is 0.9 of the classic loop's on the same runs, read off a non-parametric
    estimate of their times that forgets them when they change
    (:mod:`~runfleet.polling.completion_sketch`, :mod:`~runfleet.polling.comb`), instead of the
    lognormal fit's window; every eighth run's first poll is a probe below the comb's, so
    that a sharp lower edge is seen. Off by default: offline it is within 1.2 times the
    oracle's polls on 12 of the grid's 14 shapes (the default: 6) at a p95 under the classic
    loop's on all (``benchmarks/grid.py --offline --comb``), but on runs spread evenly
    (uniform 4-12 s, 0-16 s, 1-3 s) one seed in 10 still ends over the classic loop's p95, by
    up to 1.07 times (``benchmarks/comb_race.py``), and on the simulator's runs of about 1 s
    its p95 was over the classic loop's on some runs of the grid (README, "the grid")."""
    probe_share: float = 0.125
    """With ``comb``: the share of runs whose first poll is a probe, at a random time from two
    gaps to one gap below the comb's first poll. 0 turns probes off; more see the lower tail
    sooner and cost a poll each time one finds its run working (``benchmarks/comb_race.py``)."""

    def __post_init__(self) -> None:
        for name in (
            "latency_fraction",
            "stall_factor",
            "stall_floor",
            "stall_unlearned",
            "fit_tolerance",
            "time_unit",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"PollPolicy.{name} must be a finite number >= 0, got {value!r}")
        target = self.latency_target
        if target is not None and not (math.isfinite(target) and target > 0):
            raise ValueError(f"PollPolicy.latency_target must be > 0 seconds, got {target!r}")
        if self.time_unit == 0:
            raise ValueError("PollPolicy.time_unit must be > 0")
        if self.latency_fraction == 0:
            raise ValueError("PollPolicy.latency_fraction must be > 0")
        if not 0 < self.early_share < 0.5:
            raise ValueError(
                f"PollPolicy.early_share must be between 0 and 0.5, got {self.early_share!r}"
            )
        if not 0 < self.low_quantile < self.high_quantile < 1:
            raise ValueError(
                "PollPolicy quantiles must satisfy 0 < low_quantile < high_quantile < 1, got "
                f"low_quantile={self.low_quantile}, high_quantile={self.high_quantile}"
            )
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError(
                "PollPolicy must satisfy 1 <= min_samples <= max_samples, got "
                f"min_samples={self.min_samples}, max_samples={self.max_samples}"
            )
        if not 0 <= self.probe_share < 1:
            raise ValueError(
                f"PollPolicy.probe_share must be >= 0 and < 1, got {self.probe_share!r}"
            )
        if self.max_keys < 1:
            raise ValueError(f"PollPolicy.max_keys must be >= 1, got {self.max_keys}")

    def scaled(self, scale: float) -> PollPolicy:
        """Return this policy with every duration multiplied by ``scale``.

        For a simulator whose time is scaled (``scale`` real seconds per scenario second): the
        fleet then waits, stalls and aims at the same scenario times. The backoff's durations,
        ``latency_target``, the stall limits and ``time_unit`` are scaled; shares, counts and
        factors stay.

        Raises:
            ValueError: if ``scale`` is not a finite number > 0.
        """
        target = self.latency_target
        return dataclasses.replace(
            self,
            backoff=self.backoff.scaled(scale),
            latency_target=None if target is None else target * scale,
            stall_floor=self.stall_floor * scale,
            stall_unlearned=self.stall_unlearned * scale,
            time_unit=self.time_unit * scale,
        )
