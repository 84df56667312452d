"""The quota's pure accounting: how fast requests may go, and whether one may go now.

Everything here takes ``now`` (seconds on the event loop's clock) as an argument and reads no
clock, so window math, back-off and recovery are tested synchronously with literal numbers;
:class:`~runfleet.admission.quota.RequestQuota` owns the one clock and all the waiting.

Why the drain rate is ``(rpm - burst) / 60`` and not ``rpm / 60``: a bucket of capacity *b*
draining at *r* per second admits at most ``b + r * w`` requests in any window of length *w*
(it can be full when the window opens, and whatever drains inside the window can be refilled).
For ``w = 60`` that must not exceed rpm, hence ``r = (rpm - b) / 60``; the same bound allows
``b + r`` in any one second. The bound only needs every drain rate used to be at most that one
and every capacity at most *b*, so it survives the rate changing under the bucket: back-off,
recovery and learned limits only ever lower both.

Why the governor holds back ``delay_allowance`` (*J*) on top: capacity
``burst - J * rpm / 60``, drain ``(rpm - capacity) / (60 + J)``. This bucket counts a request
when it is admitted, the server's when it arrives, on another clock and after a delay that
varies (a new connection's handshake, a stalled event loop). Requests admitted up to *J* seconds
apart can arrive together, so a server window of length *w* sees what was admitted in
``w + J``: up to ``capacity + r * (w + J)``. With the capacity at the server's whole burst any
spread overflows its per-second bucket (the one 429 of ``runfleet bench --scenario tight``: a
burst admitted, a 0.1 s stall before the first requests left, one drain step more, all arriving
within 26 ms), and with ``r = (rpm - b) / 60`` its busiest minute exceeds rpm by ``r * J``. The
two terms above keep both bounds for spreads up to *J*; at the default burst the sustained rate
is what it was without them, to 0.1 %, and only the first burst is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from .headers import RateLimitHeaders

__all__ = ["AdmissionBucket", "LeakyBucket", "Rate", "RateGovernor"]

# Float rounding can leave a sliver of level after an exact wait, and a wait shorter than the
# clock can represent would be slept forever without time moving: such slivers are admitted.
_SLIVER = 1e-9  # seconds

# Below two requests a minute the drain rate (rpm - capacity) / 60 with a capacity of one
# request reaches zero and the bucket would never empty again.
_MIN_RPM = 2.0


@dataclass(frozen=True, slots=True)
class Rate:
    """The bucket's parameters at one moment; a shared bucket receives them with every call."""

    rpm: float
    capacity: float
    delay: float = 0.0  # the spread of delays to the server allowed for, in seconds

    @property
    def per_second(self) -> float:
        """How fast the bucket drains: ``(rpm - capacity) / (60 + delay)``, see the module doc."""
        return (self.rpm - self.capacity) / (60.0 + self.delay)


class AdmissionBucket(Protocol):
    """Where "may one request go now, and if not, when?" is decided.

    The seam for a bucket shared between processes (Redis, GCRA in a Lua script). Async because
    such a bucket is a round trip; the local one never suspends. Waits are returned as relative
    seconds because loop clocks of different processes are not comparable.
    """

    async def reserve(self, now: float, rate: Rate) -> float:
        """Admit one request and return ``0.0``, or return the seconds until one would fit."""
        ...

    async def fill(self, at: float, rate: Rate) -> None:
        """Count the bucket as full at ``at``, so a lifted pause resumes at the drain rate."""
        ...


class LeakyBucket:
    """One process's bucket: the level of admitted requests not yet drained.

    It starts empty, like aiolimiter's, so a fresh quota may send one burst at once.
    """

    __slots__ = ("_as_of", "_level")

    def __init__(self) -> None:
        self._level = 0.0
        self._as_of = -math.inf

    def admit(self, now: float, rate: Rate, n: float = 1.0) -> float:
        """Admit ``n`` (one request) and return ``0.0``, or return the seconds until they fit.

        More than the capacity at once waits for an empty bucket and leaves it in debt.
        """
        self._drain(now, rate)
        # The level may exceed a capacity that was lowered under it; it then waits longer.
        wait = (self._level - max(0.0, rate.capacity - n)) / rate.per_second
        if wait > _SLIVER:
            return wait
        self._level += n
        return 0.0

    def level(self, now: float, rate: Rate) -> float:
        """Return what the bucket holds at ``now`` (a fallback hands it on when Redis is back)."""
        self._drain(now, rate)
        return self._level

    def fill_at(self, at: float, rate: Rate) -> None:
        """Count the bucket as full at ``at``: the next request fits one drain step later."""
        self._drain(at, rate)
        self._level = max(self._level, rate.capacity)

    async def reserve(self, now: float, rate: Rate) -> float:
        """Admit one request or say how long until one fits (the :class:`AdmissionBucket` API)."""
        return self.admit(now, rate)

    async def fill(self, at: float, rate: Rate) -> None:
        """Count the bucket as full at ``at`` (the :class:`AdmissionBucket` API)."""
        self.fill_at(at, rate)

    def _drain(self, now: float, rate: Rate) -> None:
        # Time never runs backwards for the bucket: a ``now`` older than the last one seen (a
        # caller that read the clock before an await) drains nothing.
        if now > self._as_of:
            if self._level > 0.0:
                drained = (now - self._as_of) * rate.per_second
                self._level = max(0.0, self._level - drained)
            self._as_of = now


class RateGovernor:
    """Decide the request rate: the configured rpm, the server's lower limit, 429 back-off.

    After a 429 everything pauses for the retry-after and the rate drops by ``backoff_factor``
    (never below ``rate_floor`` of the limit); once the pause lifts it climbs back by
    ``recovery_step`` of the limit per ``recovery_interval`` of clean time. Recovery is computed
    from ``now`` when asked for, so no timer drives it.
    """

    def __init__(
        self,
        rpm: float,
        *,
        burst: float | None = None,
        backoff_factor: float = 0.7,
        rate_floor: float = 0.1,
        recovery_step: float = 0.1,
        recovery_interval: float = 10.0,
        default_pause: float = 1.0,
        max_pause: float = 120.0,
        delay_allowance: float = 0.25,
    ) -> None:
        if not _is_number(rpm) or not rpm > 1:
            raise ValueError(
                f"rpm must be a finite number of requests per minute above 1, got {rpm!r}"
            )
        if burst is None:
            burst = max(1.0, rpm / 60.0)
        if not _is_number(burst) or not 1 <= burst < rpm:
            raise ValueError(
                f"burst must be at least 1 request and below rpm ({rpm:g}), got {burst!r}"
            )
        _require(0 < backoff_factor < 1, "backoff_factor must be between 0 and 1", backoff_factor)
        _require(0 < rate_floor <= 1, "rate_floor must be in (0, 1]", rate_floor)
        _require(0 < recovery_step <= 1, "recovery_step must be in (0, 1]", recovery_step)
        _require(recovery_interval > 0, "recovery_interval must be positive", recovery_interval)
        _require(default_pause >= 0, "default_pause must not be negative", default_pause)
        _require(default_pause <= max_pause, "max_pause must be at least default_pause", max_pause)
        _require(0 <= delay_allowance < 60, "delay_allowance must be in [0, 60) s", delay_allowance)
        self.rpm = float(rpm)
        self.burst = float(burst)
        self.backoff_factor = backoff_factor
        self.rate_floor = rate_floor
        self.recovery_step = recovery_step
        self.recovery_interval = recovery_interval
        self.default_pause = default_pause
        self.max_pause = max_pause
        self.delay_allowance = delay_allowance
        self.server_limit: float | None = None
        self.server_remaining: float | None = None
        self.paused_until = -math.inf
        self.rate_limited = 0
        self.consecutive_rate_limits = 0
        self._lowered_to: float | None = None  # rpm right after the last back-off
        self._recover_from = -math.inf  # recovery counts clean time from here (a pause's end)
        self._last_backoff = -math.inf

    @property
    def backed_off_until(self) -> float:
        """When the latest 429's pause ends (``-inf`` if none was seen)."""
        return self._recover_from

    @property
    def limit(self) -> float:
        """The ceiling: the configured rpm, or the server's limit when that is lower."""
        if self.server_limit is None:
            return self.rpm
        return min(self.rpm, max(self.server_limit, _MIN_RPM))

    def rate(self, now: float) -> Rate:
        """Return the rate in force at ``now``, recovery steps included."""
        limit = self.limit
        rpm = limit
        if self._lowered_to is not None:
            steps = 0
            if now >= self._recover_from:
                steps = math.floor((now - self._recover_from) / self.recovery_interval)
            rpm = min(limit, self._lowered_to + steps * self.recovery_step * limit)
            rpm = max(rpm, self._floor(limit))
        # Burst shrinks with the rate so that it stays the fraction of it the user chose and the
        # drain rate stays positive: capacity < rpm because burst < configured rpm. What drains
        # in ``delay_allowance`` is held back for requests that reach the server bunched up
        # (see the module docstring).
        allowance = self.delay_allowance
        capacity = max(1.0, (self.burst / self.rpm - allowance / 60.0) * rpm)
        return Rate(rpm=rpm, capacity=capacity, delay=allowance)

    def learn(self, now: float, headers: RateLimitHeaders) -> None:
        """Adopt the server's limit (never above the configured rpm) and honour an empty quota."""
        if headers.limit is not None:
            self.server_limit = headers.limit
        if headers.remaining is not None:
            self.server_remaining = headers.remaining
            if headers.remaining <= 0 and headers.reset is not None:
                # Nothing left until the reset: sending now would only buy 429s.
                hold = min(headers.reset, self.max_pause)
                self.paused_until = max(self.paused_until, now + hold)

    def on_rate_limited(self, now: float, retry_after: float | None) -> bool:
        """Pause for the retry-after and back off; return whether this was a new back-off.

        A 429 that arrives while paused, or within ``default_pause`` of the last back-off, is
        most likely an echo of a request already in flight when the first one came back: it may
        lengthen the pause but lowers the rate no further and is not a new consecutive pause.
        """
        self.rate_limited += 1
        if retry_after is None or not math.isfinite(retry_after):
            pause = self.default_pause
        else:
            pause = min(max(retry_after, 0.0), self.max_pause)
        echo = now < self.paused_until or now - self._last_backoff < self.default_pause
        if not echo:
            # Lower from the rate in force (maybe mid-recovery) before the pause moves the clock.
            current = self.rate(now).rpm
            self._lowered_to = max(self._floor(self.limit), current * self.backoff_factor)
            self._last_backoff = now
            self.consecutive_rate_limits += 1
        self.paused_until = max(self.paused_until, now + pause)
        self._recover_from = self.paused_until
        return not echo

    def on_success(self) -> None:
        """Note a request the server accepted: 429s since then are no longer consecutive."""
        self.consecutive_rate_limits = 0

    def _floor(self, limit: float) -> float:
        return min(limit, max(self.rate_floor * limit, _MIN_RPM))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, message: str, value: float) -> None:
    if not ok:
        raise ValueError(f"{message}, got {value!r}")
