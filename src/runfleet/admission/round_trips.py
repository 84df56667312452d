"""What the shared store reports: its snapshot, and the round trips it measured to Redis.

The round trips are more than a figure: their 99th percentile is the delay the shared bucket
allows for (:mod:`runfleet.admission.redis_script`), since a request is counted at Redis'
``TIME`` and leaves its process only once the reply has come back through a busy loop.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

__all__ = ["RoundTrips", "SharedStats"]


@dataclass(frozen=True, slots=True)
class SharedStats:
    """A snapshot of the shared store, as this process sees it.

    Attributes:
        account: the account whose limits are shared.
        state: ``"shared"`` (Redis answers), ``"fallback"`` (alone at limit / N) or ``"down"``
            (fail_closed: waiting for Redis).
        calls: script calls that Redis answered.
        round_trip_us: their mean duration, in microseconds, as this process's loop saw it
            (a busy loop lengthens it); ``round_trip_p50_us`` and ``round_trip_p99_us`` the
            median and the 99th percentile of the last 1,024.
        members: processes alive on the account at the last answer.
        rpm_in_force: the request limit the script applied at the last answer.
        round_trip_allowance: seconds added to the delay allowance at the last answer: the
            slowest live process's 99th-percentile round trip (see
            :mod:`runfleet.admission.redis_script`).
        failures: calls that found Redis unreachable.
        fallback_admissions: requests admitted alone, without Redis.
    """

    account: str
    state: str
    calls: int
    round_trip_us: float
    round_trip_p50_us: float
    round_trip_p99_us: float
    members: int
    rpm_in_force: float | None
    round_trip_allowance: float
    failures: int
    fallback_admissions: int


class RoundTrips:
    """Script calls' durations as this process's loop saw them: all counted, the last 1,024 kept."""

    __slots__ = ("calls", "recent", "total")

    def __init__(self) -> None:
        self.calls = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=1024)

    def add(self, seconds: float) -> None:
        """Count one answered call that took ``seconds``."""
        self.calls += 1
        self.total += seconds
        self.recent.append(seconds)

    def mean(self) -> float:
        """Return the mean over every call, in seconds (0 before the first)."""
        return self.total / self.calls if self.calls else 0.0

    def median(self) -> float:
        """Return the median of the recent calls, in seconds."""
        return statistics.median(self.recent) if self.recent else 0.0

    def p99(self) -> float:
        """Return the 99th percentile of the recent calls, in seconds."""
        ordered = sorted(self.recent)
        return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
