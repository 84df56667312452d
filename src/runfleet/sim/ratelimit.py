"""The simulated account's quotas: requests and tokens, each a bucket over the quota's window.

Sub-minute enforcement is modelled as a bucket of ``rpm * window / 60`` tokens refilled at
``rpm / 60`` per second: with a 1 s window a 600 RPM account takes 10 requests at once and
then one every 100 ms, which is how OpenAI describes "60 RPM enforced as 1 request per second".
Such a bucket lets up to twice its share into one second (full, then refilled); a quota with
``enforce: "log"`` counts arrivals instead, at most the share in any window, as stricter
compatible servers do.
Everything here runs in scenario seconds; the values put in headers are converted to the
client's real time, because the client sleeps on them.

Tokens use the same bucket shape with ``tpm`` for ``rpm``, plus OpenAI's two-step accounting: a
request takes its input estimate and its output reservation when admitted, and the unused part
of the reservation flows back when its run ends. Refunds wait in a heap and are applied lazily,
in time order, whenever the bucket is next read, so nothing ticks.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from .lifecycle import Job, Segment
from .scenario import Quota, Storms

__all__ = ["Admission", "PeakWindow", "TokenBucket", "TokenWindow", "go_duration"]


def go_duration(seconds: float) -> str:
    """Format a duration as OpenAI's ``x-ratelimit-reset-*`` headers do: ``120ms``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


class Admission:
    """The outcome of asking the bucket for one request."""

    __slots__ = ("admitted", "retry_after", "storm", "too_large")

    def __init__(
        self,
        admitted: bool,
        retry_after: float = 0.0,
        storm: bool = False,
        too_large: bool = False,
    ) -> None:
        self.admitted = admitted
        self.retry_after = retry_after
        self.storm = storm
        # Larger than the whole limit: no wait will cure it, so there is no retry_after.
        self.too_large = too_large


class TokenBucket:
    """Admit requests at the quota's rate with bursts bounded by its window."""

    def __init__(self, quota: Quota, storms: Storms) -> None:
        self.quota = quota
        self.storms = storms
        self.capacity = max(1.0, quota.rpm * quota.window / 60.0)
        self.rate = quota.rpm / 60.0
        self.tokens = self.capacity
        self.updated = 0.0
        # With ``enforce: "log"`` the arrivals of the last window, instead of a refilled level.
        self.log: deque[float] | None = deque() if quota.enforce == "log" else None

    def _refill(self, now: float) -> None:
        if self.log is not None:
            horizon = now - self.quota.window
            while self.log and self.log[0] <= horizon:
                self.log.popleft()
            self.tokens = self.capacity - len(self.log)
            return
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def _take(self, now: float) -> None:
        self.tokens -= 1.0
        if self.log is not None:
            self.log.append(now)

    def _wait(self, now: float) -> float:
        """Return scenario seconds until one request fits."""
        if self.log is not None:
            # One fits once at most capacity - 1 remain: wait for the arrival whose leaving
            # gets there (counted rejections can have overfilled the log).
            first = max(0, len(self.log) - math.floor(self.capacity))
            return self.log[first] + self.quota.window - now if self.log else 0.0
        return (1.0 - self.tokens) / self.rate

    def admit(self, now: float) -> Admission:
        """Take a token if one is there; otherwise say how long until one will be."""
        st = self.storms
        if st.every and st.duration:
            into = now % st.every
            if into < st.duration:
                return Admission(False, st.duration - into, storm=True)
        self._refill(now)
        if self.tokens >= 1.0:
            self._take(now)
            return Admission(True)
        wait = self._wait(now)
        if self.quota.count_rejected:
            self._take(now)  # failed requests count against the limit too
        return Admission(False, wait)

    def remaining_fraction(self, now: float) -> float:
        """Return how full the bucket is, 0 to 1, for ``x-ratelimit-remaining-requests``."""
        self._refill(now)
        return max(0.0, self.tokens) / self.capacity

    def until_full(self, now: float) -> float:
        """Return scenario seconds until the bucket is full (``x-ratelimit-reset-requests``)."""
        self._refill(now)
        if self.log is not None:
            return self.log[-1] + self.quota.window - now if self.log else 0.0
        return (self.capacity - self.tokens) / self.rate


class PeakWindow:
    """Track the most requests seen in any sliding window (the benchmarks' "peak window")."""

    def __init__(self, length: float = 60.0) -> None:
        self.length = length
        self.times: deque[float] = deque()
        self.peak = 0

    def record(self, now: float) -> None:
        """Count one request at ``now``."""
        times = self.times
        times.append(now)
        horizon = now - self.length
        while times[0] <= horizon:
            times.popleft()
        if len(times) > self.peak:
            self.peak = len(times)

    def current(self, now: float) -> int:
        """Return the requests in the window ending at ``now``."""
        horizon = now - self.length
        return sum(1 for t in self.times if t > horizon)


class TokenWindow:
    """Charge tokens at admission, refund the unused reservation when a pass ends.

    With no ``tpm`` everything is admitted and only counted. A request larger than what the
    window holds (but within ``tpm``) waits for a full bucket and then takes it into debt, so
    that anything OpenAI would accept is eventually admitted and the long-run rate stays at
    ``tpm``; a request larger than ``tpm`` itself is refused for good.
    """

    def __init__(self, quota: Quota) -> None:
        self.limit = quota.tpm
        self.capacity = math.inf if quota.tpm is None else quota.tpm * quota.window / 60.0
        self.rate = 0.0 if quota.tpm is None else quota.tpm / 60.0
        self.tokens = self.capacity
        self.updated = 0.0
        self.charged = 0
        self.refunded = 0
        self.segments: list[Segment] = []  # in admission order, for the peak and the timeline
        self._due: list[tuple[float, int, Segment, Job]] = []
        self._seq = itertools.count()

    def _refill(self, now: float) -> None:
        if now > self.updated:
            if self.rate:
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def _advance(self, now: float) -> None:
        """Apply the refunds due by ``now`` in the order they fell due, then refill to now."""
        due = self._due
        while due and due[0][0] <= now:
            at, _, seg, job = heapq.heappop(due)
            if seg.settled or at != seg.ends_at:
                continue  # settled already, or a cancel moved its end: another entry holds it
            self._refill(at)
            self._give_back(seg, job.unused(seg))
        self._refill(now)

    def _give_back(self, seg: Segment, amount: int) -> None:
        seg.settled = True
        seg.refunded = amount
        self.refunded += amount
        self.tokens = min(self.capacity, self.tokens + amount)

    def admit(self, now: float, seg: Segment) -> Admission:
        """Charge a pass if the window has room; otherwise say how long until it will."""
        self._advance(now)
        cost = seg.charged
        if self.limit is not None:
            if cost > self.limit:
                return Admission(False, too_large=True)
            need = min(cost, self.capacity)
            if self.tokens < need:
                return Admission(False, (need - self.tokens) / self.rate)
            self.tokens -= cost
        self.charged += cost
        self.segments.append(seg)
        return Admission(True)

    def track(self, job: Job) -> None:
        """Refund the unused part of the job's latest pass when it ends (again, if it moved)."""
        if job.segments and not (seg := job.segments[-1]).settled:
            heapq.heappush(self._due, (seg.ends_at, next(self._seq), seg, job))

    def refund_all(self, now: float, seg: Segment) -> None:
        """Give a whole charge back at once: the request failed before any work began."""
        self._advance(now)
        self._give_back(seg, seg.charged)

    def remaining_fraction(self, now: float) -> float:
        """Return how full the bucket is, 0 to 1, for ``x-ratelimit-remaining-tokens``."""
        self._advance(now)
        return max(0.0, self.tokens) / self.capacity

    def until_full(self, now: float) -> float:
        """Return scenario seconds until the bucket is full (``x-ratelimit-reset-tokens``)."""
        self._advance(now)
        return (self.capacity - self.tokens) / self.rate if self.rate else 0.0

    def snapshot(self, now: float, length: float = 60.0) -> dict[str, Any]:
        """Return the token figures of ``/_sim/stats``; unsettled passes count in full."""
        self._advance(now)
        used = [(s.admitted, s.charged - s.refunded) for s in self.segments]
        return {
            "limit": self.limit,
            "charged": self.charged,
            "refunded": self.refunded,
            "used": self.charged - self.refunded,
            "outstanding": sum(s.charged for s in self.segments if not s.settled),
            "peak_window": {"seconds": length, "peak": _peak(used, length), "quota": self.limit},
        }

    def per_second(self) -> Counter[int]:
        """Return tokens used (reserved until settled) by second of admission."""
        out: Counter[int] = Counter()
        for s in self.segments:
            out[int(s.admitted)] += s.charged - s.refunded
        return out


def _peak(events: Sequence[tuple[float, int]], length: float) -> int:
    """Return the largest sum of amounts within any window of ``length`` (times ascending)."""
    best = total = start = 0
    for t, amount in events:
        total += amount
        while events[start][0] <= t - length:
            total -= events[start][1]
            start += 1
        best = max(best, total)
    return best
