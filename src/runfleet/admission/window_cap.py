"""A ceiling on requests in any short window: servers that enforce a per-second share.

OpenAI may enforce a limit over sub-minute periods ("60 RPM enforced as 1 request per
second"), and stricter compatible servers count a log: at most ``rpm / 60`` requests in *any*
second. The quota's leaky bucket cannot hold that on its own: a bucket of capacity *b* draining
at *r* lets ``b + r`` into one second, which is the per-second share only if the bucket sustains
almost nothing. So the share is a second, separate check: a log of admission times, at most
``count`` admissions in any ``window + delay`` seconds.

Why ``window + delay``: the server counts arrivals, the quota admissions, and admissions up to
``delay`` apart can arrive together (the bucket's ``delay_allowance``, see
:mod:`runfleet.admission.bucket`); any server window of length *w* holds arrivals admitted in
``w + delay``. The price is the sustained rate: ``count / (window + delay)``, 8 requests a
second instead of 10 at 600 RPM with the default quarter second. So a share the user sets
gets the allowance, and a learned one starts without it and gets it only after a 429 (which
doubles it from 0.1 s): most servers that enforce per second do so with a bucket, which
tolerates that spread, and would only lose a fifth of their rate to it.

The spread on the way is at most the longest round trip (a request is counted between its
admission and its answer), so the allowance is also the longest round trip of the latest 10 s
when that is longer (:meth:`WindowCap.observe_trip`): on a quiet machine a few milliseconds, on
a loaded one, where the simulator's process stalls for a quarter of a second or more, as long
as the stalls, which a fixed quarter second let through as 429s.

It also says when a server enforces such a share (:func:`sub_minute_window`): from the
``x-ratelimit-*-requests`` headers, whose reset is "until the quota is full again", or from a
429's message. Pure: ``now`` is an argument, no clock is read.
"""

from __future__ import annotations

import math
import re
from collections import deque

from .headers import RateLimitHeaders

__all__ = ["WindowCap", "sub_minute_window"]

# A reset this much shorter than a per-minute refill of what was used means the server refills
# over a shorter window. Read from at least _MIN_USED requests used, an estimate of a minute's
# window is above 40 s even with the remaining count rounded down; 20 s leaves room both ways.
_SUB_MINUTE = 20.0  # seconds
_SLIVER = 1e-9  # seconds
_MIN_USED = 3.0
_TRIP_MEMORY = 10.0  # seconds a long round trip is allowed for after it was seen
_PER_SECOND_MESSAGE = re.compile(r"per second|\bRPS\b|per 1s\b", re.IGNORECASE)


class WindowCap:
    """At most ``count`` admissions in any ``window + delay`` seconds (see the module doc)."""

    __slots__ = ("_times", "_trips", "count", "delay", "window")

    def __init__(self, count: float, window: float = 1.0, delay: float = 0.0) -> None:
        if not (isinstance(count, int | float) and 1 <= count < math.inf):
            raise ValueError(
                f"per_second must be a number of requests of at least 1, got {count!r}"
            )
        if not (isinstance(window, int | float) and 0 < window <= 60):
            raise ValueError(f"the per-second window must be in (0, 60] s, got {window!r}")
        self.count = math.floor(count)
        self.window = float(window)
        self.delay = float(delay)
        self._times: deque[float] = deque()
        # (when answered, round trip), the longest of the latest _TRIP_MEMORY seconds first:
        # a deque kept decreasing in trip, so the front is the longest still remembered.
        self._trips: deque[tuple[float, float]] = deque()

    @property
    def span(self) -> float:
        """The admission-time window the count is held over: ``window`` plus the spread
        allowed for (``delay``, or the longest recent round trip, at most ``window``)."""
        trip = self._trips[0][1] if self._trips else 0.0
        return self.window + min(max(self.delay, trip), self.window)

    def observe_trip(self, now: float, seconds: float) -> None:
        """Note a request answered at ``now``, ``seconds`` after it was admitted.

        The server counted it somewhere in that time, so two requests admitted ``t`` apart
        arrived at least ``t`` minus the longer round trip apart: allowing for the longest
        recent trip keeps what arrives within the share when the server's process or the
        network stalls (on a loaded machine, for a quarter of a second or more), before any
        429 says so.
        """
        trips = self._trips
        while trips and trips[-1][1] <= seconds:
            trips.pop()
        trips.append((now, seconds))
        while trips[0][0] < now - _TRIP_MEMORY:
            trips.popleft()

    def wait(self, now: float) -> float:
        """Return ``0.0`` if one more may be admitted at ``now``, else the seconds until one may."""
        times = self._times
        # A sliver past the horizon counts as gone: a wait shorter than the clock can step
        # would be slept forever without time moving.
        horizon = now - self.span + _SLIVER
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) < self.count:
            return 0.0
        # A ceiling lowered under a full log frees a slot only once the surplus has left too.
        return times[len(times) - self.count] - horizon

    def widen(self) -> float:
        """Allow for twice the spread (at least 0.1 s, at most the window); return it.

        For a 429 that came despite the cap: requests bunched more on the way than allowed
        for (a loaded machine stalls the client's loop, or the server's, for longer), and the
        next stall will likely be as long.
        """
        self.delay = min(self.window, max(0.1, 2.0 * self.delay))
        return self.delay

    def take(self, now: float) -> None:
        """Count one admission at ``now`` (after :meth:`wait` said it may go)."""
        self._times.append(now)


def sub_minute_window(headers: RateLimitHeaders, message: str | None = None) -> float | None:
    """Return the window in seconds a server enforces its limit over, if shorter than a minute.

    Read from a 429's message ("... per second ...") or from the headers: a quota refilled
    over a minute refills what was used, ``limit - remaining``, in ``60 * used / limit``
    seconds, so a reset much shorter than that means a shorter window,
    ``reset * limit / used``. ``None``: nothing says so (a minute, as far as can be told).
    """
    if message is not None and _PER_SECOND_MESSAGE.search(message):
        return 1.0
    limit, remaining, reset = headers.limit, headers.remaining, headers.reset
    if limit is None or remaining is None or reset is None or limit - remaining < _MIN_USED:
        return None
    window = reset * limit / (limit - remaining)
    if window >= _SUB_MINUTE or window <= 0.0:
        return None
    return min(1.0, window)
