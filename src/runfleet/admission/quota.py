"""The request quota every HTTP request passes: how fast, and what the server says of limits.

Every HTTP request passes :meth:`RequestQuota.acquire` first (DESIGN.md, invariant 1). The
quota owns the one clock and decides *when* a slot may go: its bucket at the rate the governor
sets, paused by 429s and held by an empty server quota, both learned from each response's
headers (:meth:`RequestQuota.observe`). *Who* gets each slot, most urgent first with one timer
for all waiters, is :class:`~runfleet.admission.priority.AdmissionQueue`'s.

The bucket is aiolimiter's leaky bucket written out in :mod:`runfleet.admission.bucket`, not
wrapped: ``AsyncLimiter`` reads the clock itself and cannot change its rate or be filled after a
pause without touching private attributes. The decision sits behind ``AdmissionBucket``, which a
Redis-backed bucket can fill later.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..logs import get_logger
from .bucket import AdmissionBucket, LeakyBucket, RateGovernor
from .headers import LimitHit, RateLimitHeaders, parse_rate_limit_headers, retry_after_seconds
from .priority import AdmissionQueue, Priority
from .round_trips import SharedStats
from .shared import RedisLimits
from .token_quota import TokenQuota, TokenStats
from .window_cap import WindowCap, sub_minute_window

__all__ = ["Priority", "QuotaStats", "RequestQuota"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class QuotaStats:
    """A snapshot of a quota; times are on the event loop's clock."""

    rpm: float
    effective_rpm: float
    burst: float
    server_limit: float | None
    server_remaining: float | None
    paused_until: float | None
    paused_for: float
    waiting: Mapping[Priority, int]
    admitted: Mapping[Priority, int]
    rate_limited: int
    consecutive_rate_limits: int
    exhausted: bool
    tokens: TokenStats | None = None
    shared: SharedStats | None = None
    per_second: float | None = None

    @property
    def waiting_total(self) -> int:
        """How many acquires are waiting, all priorities together."""
        return sum(self.waiting.values())


class RequestQuota:
    """Admit requests at most ``rpm`` per minute in any 60 s window, most urgent first.

    Learns the real limit from response headers, pauses everyone on a 429 and backs off, then
    recovers. Persistent 429s are counted (``consecutive_rate_limits``); by default the caller
    decides what to do with them, and with ``max_consecutive_rate_limits`` set the quota gives
    up itself and fails every waiter with :class:`~runfleet.errors.QuotaExhausted`.

    Example::

        quota = RequestQuota(3000)
        await quota.acquire(Priority.POLL)
        try:
            raw = await client.responses.with_raw_response.retrieve(response_id)
        except openai.APIStatusError as error:  # with max_retries=0 a 429 raises at once
            quota.observe(error.response.headers, status=error.status_code)
            raise
        quota.observe(raw.headers, status=raw.status_code)

    Args:
        rpm: requests per minute never to exceed in any 60 s window.
        burst: requests that may go at once; default one second's share (rpm / 60, at least 1).
        backoff_factor: the rate is multiplied by this on each new 429.
        rate_floor: back-off never goes below this fraction of the limit.
        recovery_step: fraction of the limit regained per clean ``recovery_interval`` seconds.
        default_pause: pause when a 429 names no retry-after.
        max_pause: longest pause honoured, whatever the server asks.
        delay_allowance: seconds by which requests admitted apart may reach the server
            together (connection setup, a stalled loop); that much of the rate is held back
            from the burst and the minute, so the server, which counts arrivals, never sees
            more than burst or rpm (see :mod:`runfleet.admission.bucket`).
        create_share: the share of admissions creates get while a poll waits too: a started
            run is a debt of polls, and creates may not outrun the polls that pay it. The
            default, a half, alternates them.
        poll_patience: admissions (at the rate in force) a due poll may wait behind creates
            before it goes first; 20 is two seconds at 600 RPM. It bounds how late a backlog
            of creates makes polls (see :mod:`runfleet.admission.priority`).
        max_consecutive_rate_limits: give up after this many back-offs without a success.
        bucket: where admission is decided; a private :class:`LeakyBucket` by default.
        tpm: tokens per minute never to exceed in any 60 s window; None (the default) learns
            the limit from ``x-ratelimit-limit-tokens``. Token-costing requests wait for it
            in :attr:`tokens` before they queue here, so polls never wait for tokens.
        shared: spend the account's limits with other processes through Redis: the bucket
            and the token bucket become the shared ones, and 429s and learned limits are
            shared (see :mod:`runfleet.admission.shared`). Priorities stay this process's.
        tokens: the token half built apart (a :class:`TokenQuota` with its own estimates or
            minute) instead of one of ``tpm``.
        per_second: requests never to exceed in any second, for a server that enforces a
            per-second share (``rpm / 60`` on OpenAI); None (the default) learns it when the
            server's reset header or a 429's message shows one (:mod:`.window_cap`).
        per_second_window: the length of that "second" in seconds; a time-scaled simulator
            shrinks it.

    Raises:
        ValueError: a setting is out of range (rpm not above 1, burst not in [1, rpm), tpm
            not positive, ...).
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
        create_share: float = 0.5,
        poll_patience: float = 20.0,
        max_consecutive_rate_limits: int | None = None,
        bucket: AdmissionBucket | None = None,
        tpm: float | None = None,
        shared: RedisLimits | None = None,
        tokens: TokenQuota | None = None,
        per_second: float | None = None,
        per_second_window: float = 1.0,
    ) -> None:
        if tokens is not None and tpm is not None:
            raise ValueError("tpm cannot be set beside a token quota: set it on the token quota")
        self.tokens = tokens if tokens is not None else TokenQuota(tpm, shared=shared)
        """The token half of the door: creates and tool outputs reserve tokens here first."""
        self._governor = RateGovernor(
            rpm,
            burst=burst,
            backoff_factor=backoff_factor,
            rate_floor=rate_floor,
            recovery_step=recovery_step,
            recovery_interval=recovery_interval,
            default_pause=default_pause,
            max_pause=max_pause,
            delay_allowance=delay_allowance,
        )
        if not 0 < create_share <= 1:
            raise ValueError(f"create_share must be in (0, 1], got {create_share!r}")
        if not poll_patience >= 0:
            raise ValueError(f"poll_patience must be >= 0, got {poll_patience!r}")
        if max_consecutive_rate_limits is not None and max_consecutive_rate_limits < 1:
            got = max_consecutive_rate_limits
            raise ValueError(f"max_consecutive_rate_limits must be at least 1, got {got!r}")
        self._max_consecutive = max_consecutive_rate_limits
        self.shared = shared
        if shared is not None:
            shared.bind(self._governor.rpm, tpm)
            bucket = bucket if bucket is not None else shared
        self._cap: WindowCap | None = None
        if per_second is not None:
            self._cap = WindowCap(per_second, per_second_window, delay_allowance)
        self._bucket: AdmissionBucket = bucket if bucket is not None else LeakyBucket()
        self._filled_for = -math.inf  # the pause end the bucket was last filled for
        self._rpm_in_force = self._governor.rpm
        self._queue = AdmissionQueue(
            self._reserve,
            create_share=create_share,
            patience=lambda: poll_patience * 60.0 / self._rpm_in_force,
        )
        self._last_now = 0.0

    async def acquire(self, priority: Priority, *, since: float | None = None) -> None:
        """Wait until one request of this priority may go out, then return; spend it at once.

        ``since``: when a poll's run came due, so a late poll goes before creates. Cancelling
        a waiting call is safe: it leaves the queue, and a slot granted to it in the meantime
        passes to the next waiter.

        Raises:
            QuotaExhausted: 429s persisted past ``max_consecutive_rate_limits``.
        """
        await self._queue.admit(Priority(priority), since=since)

    async def _reserve(self, now: float) -> float:
        """Return 0.0 if a slot was taken at ``now``, else the seconds until one may be."""
        self._last_now = now
        governor = self._governor
        # A pause that ends within a sliver has ended: looptime's clock steps in microseconds,
        # and a float sum such as ``now + reset`` can land a hair past the step it meant.
        if governor.paused_until - now > 1e-9:
            return governor.paused_until - now
        rate = governor.rate(now)
        if rate.rpm != self._rpm_in_force:
            self._rpm_in_force = rate.rpm
            log.info("quota_rate_changed", rpm=rate.rpm, limit=governor.limit, burst=rate.capacity)
        if governor.paused_until > self._filled_for:
            # A pause has just lifted: after a 429's, count the bucket as full at that moment so
            # waiters resume one drain step apart at the lowered rate, not as a burst. A hold
            # for an empty server quota ends when the server's is full again ("reset"), so a
            # step more would only lose one (half the rate, when each request empties it).
            self._filled_for = governor.paused_until
            if governor.paused_until <= governor.backed_off_until:
                await self._bucket.fill(governor.paused_until, rate)
        cap = self._cap
        if cap is None:
            return await self._bucket.reserve(now, rate)
        wait = cap.wait(now)
        if wait > 0.0:
            return wait
        wait = await self._bucket.reserve(now, rate)
        if wait == 0.0:
            cap.take(now)
        return wait

    def observe(
        self,
        headers: Mapping[str, str],
        *,
        status: int | None = None,
        limit: LimitHit = "requests",
        since: float | None = None,
        message: str | None = None,
        trip: float | None = None,
    ) -> None:
        """Learn from one response's headers; call it for every response, 429s included.

        With ``status``, a 429 also pauses the quota (as :meth:`on_rate_limited` with the
        response's ``retry-after-ms``/``retry-after``), and any other status below 500 counts
        as a success that ends a run of consecutive 429s. ``limit`` says which limit a 429 hit
        (:func:`~runfleet.admission.headers.limit_hit`): a tokens 429 pauses only what costs
        tokens, and "request too large" pauses nothing (that request alone fails). ``since``
        is the token quota's mark when the request left (:meth:`TokenQuota.mark`). A
        requests 429's ``message``, like the headers, may show a per-second share. ``trip``
        is the seconds from the request's admission to this answer (:meth:`WindowCap.observe_trip`).
        """
        self.tokens.observe(headers, since)
        if status == 429 and limit != "requests":
            if limit == "tokens":
                self.tokens.on_rate_limited(retry_after_seconds(headers))
                self._share_pause("tokens", self.tokens.budget.paused_until)
            else:
                self.tokens.on_too_large()
            status = None  # the request limit was not what refused it
        now = self._now()
        governor = self._governor
        limit_before, paused_before = governor.limit, governor.paused_until
        parsed = parse_rate_limit_headers(headers)
        governor.learn(now, parsed)
        if self.shared is not None:
            self.shared.learned(governor.server_limit, self.tokens.budget.server_limit)
        if self._cap is None:
            self._learn_window(parsed, message if status == 429 else None)
        if self._cap is not None and trip is not None:
            self._cap.observe_trip(now, trip)
        if governor.limit != limit_before:
            log.info(
                "quota_limit_learned",
                server_limit=parsed.limit,
                limit=governor.limit,
                configured_rpm=governor.rpm,
            )
            self._queue.kick()
        if governor.paused_until > paused_before:
            log.info("quota_held_until_reset", reset=parsed.reset, remaining=parsed.remaining)
        if status == 429:
            before = governor.consecutive_rate_limits
            after = self.on_rate_limited(retry_after_seconds(headers))
            if self._cap is not None and after > before:  # a new back-off, not an echo
                log.warning("quota_per_second_widened", delay=self._cap.widen())
        elif status is not None and status < 500:
            governor.on_success()

    def _learn_window(self, parsed: RateLimitHeaders, message: str | None) -> None:
        """Hold a per-second share from now on if the server shows it enforces one."""
        window = sub_minute_window(parsed, message)
        if window is None:
            return
        governor = self._governor
        share = max(1.0, governor.limit * window / 60.0)
        # Learned, it allows for no spread at first: a server that enforces the share as a
        # bucket (OpenAI's description) takes it as is, and the quota's own bucket already keeps
        # its burst; one that counts strictly answers a 429, which widens it (``observe``).
        self._cap = WindowCap(share, window, 0.0)
        log.info("quota_per_second_learned", per_second=share, window=window)
        self._queue.kick()

    def on_rate_limited(self, retry_after: float | None = None) -> int:
        """Pause every admission after a 429 and lower the rate; return the consecutive count.

        Args:
            retry_after: seconds the server asked to wait (see
                :func:`~runfleet.admission.headers.retry_after_seconds`); ``None`` pauses for
                ``default_pause``.
        """
        now = self._now()
        governor = self._governor
        new = governor.on_rate_limited(now, retry_after)
        self._share_pause("requests", governor.paused_until)
        if not new:
            log.debug("quota_rate_limit_echo", retry_after=retry_after)
            return governor.consecutive_rate_limits
        consecutive = governor.consecutive_rate_limits
        log.warning(
            "quota_paused",
            retry_after=retry_after,
            paused_for=governor.paused_until - now,
            rate=governor.rate(governor.paused_until).rpm,
            consecutive=consecutive,
        )
        limit = self._max_consecutive
        if limit is not None and consecutive >= limit and self._queue.exhausted is None:
            self._give_up(f"{consecutive} consecutive rate-limit pauses with no request accepted")
        return consecutive

    def _share_pause(self, limit: Literal["requests", "tokens"], until: float) -> None:
        if self.shared is not None:
            self.shared.paused(limit, until - self._now())

    async def publish(self) -> None:
        """Tell the processes sharing the account what this one just learned (a 429's pause)."""
        if self.shared is not None:
            await self.shared.flush()

    async def aclose(self) -> None:
        """Close the shared store's connections, if any (it reconnects if used again)."""
        if self.shared is not None:
            await self.shared.aclose()

    def _give_up(self, reason: str) -> None:
        """Fail every waiter and every later acquire with QuotaExhausted."""
        log.error("quota_exhausted", reason=reason, waiting=sum(self._queue.waiting.values()))
        self._queue.close(reason)

    def stats(self) -> QuotaStats:
        """Return a snapshot of the quota's settings, learned limits, queue and counters."""
        now = self._now()
        governor = self._governor
        rate = governor.rate(now)
        paused_for = max(0.0, governor.paused_until - now)
        return QuotaStats(
            rpm=governor.rpm,
            effective_rpm=rate.rpm,
            burst=rate.capacity,
            server_limit=governor.server_limit,
            server_remaining=governor.server_remaining,
            paused_until=governor.paused_until if paused_for > 0.0 else None,
            paused_for=paused_for,
            waiting=dict(self._queue.waiting),
            admitted=dict(self._queue.admitted),
            rate_limited=governor.rate_limited,
            consecutive_rate_limits=governor.consecutive_rate_limits,
            exhausted=self._queue.exhausted is not None,
            tokens=self.tokens.stats(),
            shared=self.shared.stats() if self.shared is not None else None,
            per_second=None if self._cap is None else self._cap.count,
        )

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<RequestQuota rpm={s.effective_rpm:g}/{s.rpm:g} waiting={s.waiting_total}"
            f" paused={s.paused_for:.1f}s>"
        )

    def _now(self) -> float:
        """The loop's clock; outside a loop (a debugger's repr) the last time the quota saw."""
        with contextlib.suppress(RuntimeError):
            self._last_now = asyncio.get_running_loop().time()
        return self._last_now
