"""The simulated account's request quota: a token bucket, storms, and the headers OpenAI sends.

Sub-minute enforcement is modelled as a bucket of ``rpm * window / 60`` tokens refilled at
``rpm / 60`` per second: with a 1 s window a 600 RPM account takes 10 requests at once and
then one every 100 ms, which is how OpenAI describes "60 RPM enforced as 1 request per second".
Everything here runs in scenario seconds; the values put in headers are converted to the
client's real time, because the client sleeps on them.
"""

from __future__ import annotations

import math
from collections import deque

from .scenario import Quota, Storms

__all__ = ["Admission", "PeakWindow", "TokenBucket", "go_duration"]


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

    __slots__ = ("admitted", "retry_after", "storm")

    def __init__(self, admitted: bool, retry_after: float = 0.0, storm: bool = False) -> None:
        self.admitted = admitted
        self.retry_after = retry_after
        self.storm = storm


class TokenBucket:
    """Admit requests at the quota's rate with bursts bounded by its window."""

    def __init__(self, quota: Quota, storms: Storms) -> None:
        self.quota = quota
        self.storms = storms
        self.capacity = max(1.0, quota.rpm * quota.window / 60.0)
        self.rate = quota.rpm / 60.0
        self.tokens = self.capacity
        self.updated = 0.0

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def admit(self, now: float) -> Admission:
        """Take a token if one is there; otherwise say how long until one will be."""
        st = self.storms
        if st.every and st.duration:
            into = now % st.every
            if into < st.duration:
                return Admission(False, st.duration - into, storm=True)
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Admission(True)
        wait = (1.0 - self.tokens) / self.rate
        if self.quota.count_rejected:
            self.tokens -= 1.0  # failed requests count against the limit too
        return Admission(False, wait)

    def remaining_fraction(self, now: float) -> float:
        """Return how full the bucket is, 0 to 1, for ``x-ratelimit-remaining-requests``."""
        self._refill(now)
        return max(0.0, self.tokens) / self.capacity

    def until_full(self, now: float) -> float:
        """Return scenario seconds until the bucket is full (``x-ratelimit-reset-requests``)."""
        self._refill(now)
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
