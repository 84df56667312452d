"""Admission for every request the fleet makes: one bucket, priorities, and the server's word.

Every HTTP request passes :meth:`RequestQuota.acquire` first (DESIGN.md, invariant 1). Only
one waiter ever sleeps on a timer: each caller puts a future in a heap ordered by its rank, and
one of them, the *head*, asks the bucket for a slot, sleeps until the next one and
hands each slot to the top of the heap, whoever that is. The others are woken once, when
admitted; when the head's own turn comes it passes the role on. So a tick wakes one task, not
all of them (aiolimiter issue #73), and a submit that arrives last still takes the next slot
ahead of every queued poll (invariant 5).

Submits, fetches and cancels go strictly first: each follows a poll that saw its run, so they
cannot outnumber polls for long. Creates can: a service may submit faster than its quota for
good. So a create goes before polls that arrived up to ``create_head_start`` seconds before it,
not before older ones; strict priority there would starve the polls, and no run would ever be
seen done.

The bucket is aiolimiter's leaky bucket written out in :mod:`runfleet.admission.bucket`, not
wrapped: ``AsyncLimiter`` reads the clock itself and cannot change its rate or be filled after a
pause without touching private attributes. The decision sits behind ``AdmissionBucket``, which a
Redis-backed bucket can fill later.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import structlog

from ..errors import QuotaExhausted
from .bucket import AdmissionBucket, LeakyBucket, RateGovernor
from .headers import parse_rate_limit_headers, retry_after_seconds

__all__ = ["Priority", "QuotaStats", "RequestQuota"]

log = structlog.get_logger("runfleet.admission.quota")


class Priority(enum.IntEnum):
    """Which request goes first when the quota is saturated; a higher value goes first (a
    create only before polls that waited less than ``RequestQuota(create_head_start=)``).

    Tool outputs and result fetches finish work a caller is waiting for; polls only look, so
    they are what waits (invariant 5). Cancels stop spending and come before creating more work.
    """

    SUBMIT = 4
    FETCH = 3
    CANCEL = 2
    CREATE = 1
    POLL = 0


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

    @property
    def waiting_total(self) -> int:
        """How many acquires are waiting, all priorities together."""
        return sum(self.waiting.values())


# A waiter's future resolves to a slot or to the head role; its state goes from queued to
# admitted or gone (cancelled, failed).
_ADMIT, _LEAD = True, False
_QUEUED, _ADMITTED, _GONE = "queued", "admitted", "gone"


class _Waiter:
    """One acquire() call waiting in the heap."""

    __slots__ = ("future", "priority", "state")

    def __init__(self, priority: Priority, future: asyncio.Future[bool]) -> None:
        self.priority = priority
        self.future = future
        self.state = _QUEUED


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
        create_head_start: seconds of waiting by which a create goes before a poll: a poll
            that waited longer goes before fresher creates, so creating faster than the quota
            delays polls by about this much, and never starves them.
        max_consecutive_rate_limits: give up after this many back-offs without a success.
        bucket: where admission is decided; a private :class:`LeakyBucket` by default.

    Raises:
        ValueError: a setting is out of range (rpm not above 1, burst not in [1, rpm), ...).
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
        create_head_start: float = 10.0,
        max_consecutive_rate_limits: int | None = None,
        bucket: AdmissionBucket | None = None,
    ) -> None:
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
        if not (math.isfinite(create_head_start) and create_head_start >= 0):
            got = create_head_start
            raise ValueError(f"create_head_start must be a number of seconds >= 0, got {got!r}")
        self._head_start = create_head_start
        if max_consecutive_rate_limits is not None and max_consecutive_rate_limits < 1:
            got = max_consecutive_rate_limits
            raise ValueError(f"max_consecutive_rate_limits must be at least 1, got {got!r}")
        self._max_consecutive = max_consecutive_rate_limits
        self._bucket: AdmissionBucket = bucket if bucket is not None else LeakyBucket()
        self._queue: list[tuple[int, float, int, _Waiter]] = []
        self._seq = itertools.count()
        self._head: _Waiter | None = None
        self._wake: asyncio.Future[None] | None = None  # the head's sleep, to cut it short
        self._filled_for = -math.inf  # the pause end the bucket was last filled for
        self._waiting = dict.fromkeys(Priority, 0)
        self._admitted = dict.fromkeys(Priority, 0)
        self._exhausted: str | None = None
        self._rpm_in_force = self._governor.rpm
        self._last_now = 0.0

    async def acquire(self, priority: Priority) -> None:
        """Wait until one request of this priority may go out, then return; spend it at once.

        Cancelling a waiting call is safe: it leaves the queue, and a slot granted to it in the
        meantime passes to the next waiter.

        Raises:
            QuotaExhausted: 429s persisted past ``max_consecutive_rate_limits``.
        """
        priority = Priority(priority)
        self._check_exhausted()
        loop = asyncio.get_running_loop()
        me = _Waiter(priority, loop.create_future())
        heapq.heappush(self._queue, (*self._rank(priority, loop.time()), next(self._seq), me))
        self._waiting[priority] += 1
        try:
            if self._head is None:
                # Nobody dispatches: this caller does, so an idle quota admits without a hop.
                self._head = me
                await self._lead(me)
            elif await me.future is _LEAD:
                await self._lead(me)
        except BaseException:
            self._abandon(me)
            raise
        self._admitted[priority] += 1

    def _rank(self, priority: Priority, now: float) -> tuple[int, float]:
        """Order waiters: by priority, except that creates and polls share a level, where a
        create counts as having arrived ``create_head_start`` seconds early."""
        if priority > Priority.CREATE:
            return -priority, now
        if priority == Priority.CREATE:
            return -Priority.CREATE, now - self._head_start
        return -Priority.CREATE, now

    @contextlib.asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        """Acquire on entry; nothing is given back on exit, a slot is spent once sent."""
        await self.acquire(priority)
        yield

    async def _lead(self, me: _Waiter) -> None:
        """Hand slots to the top of the heap until ``me`` has one, then pass the role on."""
        loop = asyncio.get_running_loop()
        while me.state is not _ADMITTED:
            self._check_exhausted()
            wait = await self._reserve(loop.time())
            if wait > 0.0:
                if me.state is not _ADMITTED:  # a shared bucket's await may have seen a hand-over
                    await self._sleep(loop, wait)
                continue
            # The slot is ours, and nothing awaits before the grant, so no cancellation loses
            # it. The heap can be empty if ``me`` was handed a cancelled waiter's slot meanwhile.
            top = self._pop_live()
            if top is not None:
                self._grant(top)
        self._head = None
        self._appoint_head()

    async def _reserve(self, now: float) -> float:
        """Return 0.0 if a slot was taken at ``now``, else the seconds until one may be."""
        self._last_now = now
        governor = self._governor
        if now < governor.paused_until:
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
        return await self._bucket.reserve(now, rate)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """Sleep on the one timer of this quota; :meth:`_kick` ends it early."""
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = loop.call_later(delay, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def _kick(self) -> None:
        """Make the head look again now: its own slot, a higher limit, or the quota gave up."""
        if self._wake is not None:
            _resolve(self._wake)

    def _live(self, waiter: _Waiter) -> bool:
        # A queued waiter whose future is done was cancelled and has not run its cleanup yet;
        # only the head's future is done for another reason (it was handed the role).
        return waiter.state is _QUEUED and (waiter is self._head or not waiter.future.done())

    def _bury(self, waiter: _Waiter) -> None:
        if waiter.state is _QUEUED:
            waiter.state = _GONE
            self._waiting[waiter.priority] -= 1

    def _pop_live(self) -> _Waiter | None:
        """Pop the most urgent live waiter, dropping the dead ones above it."""
        while self._queue:
            waiter = heapq.heappop(self._queue)[-1]
            if self._live(waiter):
                return waiter
            self._bury(waiter)
        return None

    def _grant(self, waiter: _Waiter) -> None:
        waiter.state = _ADMITTED
        self._waiting[waiter.priority] -= 1
        if waiter is self._head:
            self._kick()
        else:
            waiter.future.set_result(_ADMIT)

    def _appoint_head(self) -> None:
        """Make a waiter the head; one at the heap's end is likely served last, so keeps it long."""
        queue = self._queue
        while queue:
            waiter = queue[-1][-1]
            if self._live(waiter):
                self._head = waiter
                waiter.future.set_result(_LEAD)
                return
            # Dropping the last element keeps the heap a heap.
            queue.pop()
            self._bury(waiter)

    def _abandon(self, me: _Waiter) -> None:
        """Clean up after an acquire that raised (cancelled or the quota gave up)."""
        if me.state is _QUEUED:
            self._bury(me)  # its heap entry is skipped when reached
        elif me.state is _ADMITTED:
            # Granted, then cancelled before it could run: the slot goes to the next waiter
            # instead of going unused.
            successor = self._pop_live()
            if successor is not None:
                self._grant(successor)
        if self._head is me:
            self._head = None
            self._appoint_head()
        if me.future.done() and not me.future.cancelled():
            me.future.exception()  # mark a QuotaExhausted as seen even if cancelled after it

    def _check_exhausted(self) -> None:
        if self._exhausted is not None:
            raise QuotaExhausted(self._exhausted)

    def observe(self, headers: Mapping[str, str], *, status: int | None = None) -> None:
        """Learn from one response's headers; call it for every response, 429s included.

        With ``status``, a 429 also pauses the quota (as :meth:`on_rate_limited` with the
        response's ``retry-after-ms``/``retry-after``), and any other status below 500 counts
        as a success that ends a run of consecutive 429s.
        """
        now = self._now()
        governor = self._governor
        limit_before, paused_before = governor.limit, governor.paused_until
        parsed = parse_rate_limit_headers(headers)
        governor.learn(now, parsed)
        if governor.limit != limit_before:
            log.info(
                "quota_limit_learned",
                server_limit=parsed.limit,
                limit=governor.limit,
                configured_rpm=governor.rpm,
            )
            self._kick()
        if governor.paused_until > paused_before:
            log.info("quota_held_until_reset", reset=parsed.reset, remaining=parsed.remaining)
        if status == 429:
            self.on_rate_limited(retry_after_seconds(headers))
        elif status is not None and status < 500:
            governor.on_success()

    def on_rate_limited(self, retry_after: float | None = None) -> int:
        """Pause every admission after a 429 and lower the rate; return the consecutive count.

        Args:
            retry_after: seconds the server asked to wait (see
                :func:`~runfleet.admission.headers.retry_after_seconds`); ``None`` pauses for
                ``default_pause``.
        """
        now = self._now()
        governor = self._governor
        if not governor.on_rate_limited(now, retry_after):
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
        if limit is not None and consecutive >= limit and self._exhausted is None:
            self._give_up(f"{consecutive} consecutive rate-limit pauses with no request accepted")
        return consecutive

    def _give_up(self, reason: str) -> None:
        """Fail every waiter and every later acquire with QuotaExhausted."""
        self._exhausted = reason
        log.error("quota_exhausted", reason=reason, waiting=sum(self._waiting.values()))
        for *_, waiter in self._queue:
            # The head's future is already spent; it raises from its loop once kicked.
            if self._live(waiter) and waiter is not self._head:
                waiter.future.set_exception(QuotaExhausted(reason))
            self._bury(waiter)
        self._queue.clear()
        self._kick()

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
            waiting=dict(self._waiting),
            admitted=dict(self._admitted),
            rate_limited=governor.rate_limited,
            consecutive_rate_limits=governor.consecutive_rate_limits,
            exhausted=self._exhausted is not None,
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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
