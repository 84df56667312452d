"""Who is admitted next: the acquires waiting in priority order, and the one that sleeps for all.

Only one waiter ever sleeps on a timer: each caller puts a future in a heap ordered by its rank,
and one of them, the *head*, asks for a slot, sleeps until the next one and hands each slot to
the top of the heap, whoever that is. The others are woken once, when admitted; when the head's
own turn comes it passes the role on. So a tick wakes one task, not all of them (aiolimiter
issue #73), and a submit that arrives last still takes the next slot ahead of every queued poll
(invariant 5).

Submits, fetches and cancels go strictly first: each follows a poll that saw its run, so they
cannot outnumber polls for long. Creates can: a service may submit faster than its quota for
good, and a batch with a large ``max_in_flight`` queues thousands of creates at once. A
started run is a debt of polls. So while creates and polls both wait, creates get a fixed
share of the admissions (``create_share``, a half by default: they alternate), and each class
keeps its arrival order. Strict priority either way starves the other: creates first, and
3,000 creates at 300 RPM held every poll for ten minutes (the runs finished, nobody saw it);
polls first, and a busy fleet never starts new work. When only one class waits, it takes
every slot. Only one poll ever waits here (the poll loop admits one at a time, then polls the
most urgent due run), so a slow poll share makes polls later, not more numerous.

A share alone does not bound how late polls get: a run costs about one poll when polls are
late, so a half is just enough on average, and every slot creates take while no poll waits
starts runs whose polls come due later, all at once. The backlog of due polls then grew with
the backlog of creates (150 runs of 2 s at once on 600 RPM: detection p95 10 s; 600: 14 s).
So a poll *ages into priority*: the poll loop says since when its run has been late (its
due time plus half its run's age: no later than the classic loop would have seen it,
:data:`runfleet.engine.loop.LATE_SHARE`), and a poll late for longer than its patience goes
before any create. The patience is counted in
admissions at the rate in force (``poll_patience``, 20: two seconds at 600 RPM), so it
scales with the quota and with a time-scaled simulator. Creates then get what polls leave
over, and detection stays within the patience of the schedule's own lateness, however long
the backlog of creates (``tests/reliability/test_create_backlog.py``).

A share of one in the requests a run costs (about 3.4) was tried and measured: on 1,000
creates queued at once against 600 RPM it bounded detection (p95 5 s against 110 s) but gave
polls enough to follow the learned schedule at full cost (3.38 requests a run against 2.00),
and the batch took 78 % longer; a half gives p95 20 s at 2.10 requests a run, 22 % longer.

When a slot may go is not decided here: the queue asks the ``reserve`` it is given
(:class:`~runfleet.admission.quota.RequestQuota` answers from its bucket and what the server
taught it).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable

from ..errors import QuotaExhausted

__all__ = ["AdmissionQueue", "Priority"]


class Priority(enum.IntEnum):
    """Which request goes first when the quota is saturated; a higher value goes first, except
    that creates and polls share what is left (``RequestQuota(create_share=)``).

    Tool outputs and result fetches finish work a caller is waiting for; polls only look, so
    they are what waits (invariant 5). Cancels stop spending and come before creating more work.
    """

    SUBMIT = 4
    FETCH = 3
    CANCEL = 2
    CREATE = 1
    POLL = 0


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


_Heap = list[tuple[int, float, int, _Waiter]]


class AdmissionQueue:
    """Admit callers one slot at a time, most urgent first, with one timer for all of them.

    Args:
        reserve: takes a slot at ``now`` and returns ``0.0``, or returns the seconds until one
            may be taken.
        create_share: the share of admissions creates get while a poll waits too.
        patience: seconds a poll may be due behind creates before it goes first (read at
            each choice: it follows the rate in force).
    """

    def __init__(
        self,
        reserve: Callable[[float], Awaitable[float]],
        *,
        create_share: float,
        patience: Callable[[], float] = lambda: math.inf,
    ) -> None:
        self._reserve = reserve
        self._create_share = create_share
        self._patience = patience
        self._credit = 1.0  # creates' due admissions; a contended create spends one
        # Submits, fetches, cancels by priority; creates and polls apart, each in arrival order.
        self._strict: _Heap = []
        self._creates: _Heap = []
        self._polls: _Heap = []
        self._seq = itertools.count()
        self._head: _Waiter | None = None
        self._wake: asyncio.Future[None] | None = None  # the head's sleep, to cut it short
        self._exhausted: str | None = None
        self.waiting = dict.fromkeys(Priority, 0)
        """How many calls of each priority wait now."""
        self.admitted = dict.fromkeys(Priority, 0)
        """How many calls of each priority were admitted so far."""

    @property
    def exhausted(self) -> str | None:
        """Why the queue gave up (see :meth:`close`), or ``None`` while it admits."""
        return self._exhausted

    async def admit(self, priority: Priority, *, since: float | None = None) -> None:
        """Wait until one request of this priority may go out, then return.

        ``since`` is when a poll's run came due (on the loop's clock), if earlier than now:
        past its patience, it goes before creates. Cancelling a waiting call is safe: it
        leaves the queue, and a slot granted to it in the meantime passes to the next waiter.

        Raises:
            QuotaExhausted: the queue was closed, before or while waiting.
        """
        self._check_exhausted()
        loop = asyncio.get_running_loop()
        me = _Waiter(priority, loop.create_future())
        arrived = loop.time() if since is None else min(since, loop.time())
        heapq.heappush(self._heap(priority), (-priority, arrived, next(self._seq), me))
        self.waiting[priority] += 1
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
        self.admitted[priority] += 1

    def kick(self) -> None:
        """Make the head look again now: its own slot, a higher limit, or the quota gave up."""
        if self._wake is not None:
            _resolve(self._wake)

    def close(self, reason: str) -> None:
        """Fail every waiter and every later :meth:`admit` with QuotaExhausted(reason)."""
        self._exhausted = reason
        for heap in (self._strict, self._creates, self._polls):
            for *_, waiter in heap:
                # The head's future is already spent; it raises from its loop once kicked.
                if self._live(waiter) and waiter is not self._head:
                    waiter.future.set_exception(QuotaExhausted(reason))
                self._bury(waiter)
            heap.clear()
        self.kick()

    def _heap(self, priority: Priority) -> _Heap:
        if priority == Priority.POLL:
            return self._polls
        return self._creates if priority == Priority.CREATE else self._strict

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
            top = self._pop_live(loop.time())
            if top is not None:
                self._grant(top)
        self._head = None
        self._appoint_head()

    async def _sleep(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """Sleep on the one timer of this queue; :meth:`kick` ends it early."""
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = loop.call_later(delay, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def _live(self, waiter: _Waiter) -> bool:
        # A queued waiter whose future is done was cancelled and has not run its cleanup yet;
        # only the head's future is done for another reason (it was handed the role).
        return waiter.state is _QUEUED and (waiter is self._head or not waiter.future.done())

    def _bury(self, waiter: _Waiter) -> None:
        if waiter.state is _QUEUED:
            waiter.state = _GONE
            self.waiting[waiter.priority] -= 1

    def _top_live(self, heap: _Heap) -> _Waiter | None:
        """The most urgent live waiter of ``heap``, left in it; dead ones above it go."""
        while heap:
            waiter = heap[0][-1]
            if self._live(waiter):
                return waiter
            heapq.heappop(heap)
            self._bury(waiter)
        return None

    def _pop_live(self, now: float) -> _Waiter | None:
        """Pop the waiter the next slot goes to: strict priorities, then a poll due past its
        patience, then creates and polls by their shares while both wait (deficit counting: a
        create spends one credit, each contended choice earns ``create_share`` of one)."""
        if self._top_live(self._strict) is not None:
            return heapq.heappop(self._strict)[-1]
        create = self._top_live(self._creates)
        poll = self._top_live(self._polls)
        if create is None or poll is None:
            self._credit = 1.0  # no contention: nothing is owed either way
            heap = self._creates if create is not None else self._polls
            return heapq.heappop(heap)[-1] if heap else None
        if now - self._polls[0][1] > self._patience():
            return heapq.heappop(self._polls)[-1]  # late: creates wait, the share owes nothing
        self._credit = min(1.0, self._credit + self._create_share)
        if self._credit >= 1.0:
            self._credit -= 1.0
            return heapq.heappop(self._creates)[-1]
        return heapq.heappop(self._polls)[-1]

    def _grant(self, waiter: _Waiter) -> None:
        waiter.state = _ADMITTED
        self.waiting[waiter.priority] -= 1
        if waiter is self._head:
            self.kick()
        else:
            waiter.future.set_result(_ADMIT)

    def _appoint_head(self) -> None:
        """Make a waiter the head; one at a heap's end is likely served last, so keeps it long."""
        for queue in (self._polls, self._creates, self._strict):
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
            successor = self._pop_live(asyncio.get_running_loop().time())
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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
