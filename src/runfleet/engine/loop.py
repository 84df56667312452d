"""The one poll loop: wait for the earliest due time, admit one poll, hand the run over.

Idle runs are heap entries (invariant 2): the loop holds no task per run. It waits until the
heap's head is due (or a wake-up says an earlier one arrived), is admitted through the one
door for a poll, and only *then* pops the most urgent run, so a run woken while the loop
waited for the quota goes first. The poll itself runs in a short task of the fleet's group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..admission.gate import RequestGate, RequestKind, Ticket
from ..errors import QuotaExhausted
from ..polling.schedule import PollSchedule
from .run import Tracked

__all__ = ["LATE_SHARE", "PollLoop"]

LATE_SHARE = 0.5
"""The share of its run's age a due poll may wait behind creates before its patience starts.

A poll ages into priority over creates (:mod:`runfleet.admission.priority`); counted from its
due time alone, every poll is punctual under a backlog and the learned schedule is paid in
full: ``make demo`` (1,000 runs, 600 RPM at 10x) spent 3.12 requests a run and 41 s, against
2.13 and 29 s with polls behind creates until the backlog ends (noticed late p95 0.8 s against
4.2 s). Half the run's age is how late the classic loop's gaps (``0.5 + 0.5 * age``) may see a
run anyway, so a poll is not counted late before the classic loop would have seen it: 2.79
requests, 37 s, noticed late p95 1.1 s; the create backlog's detection p95 3.9 s -> 4.8 s
(``tests/reliability/test_create_backlog.py``). A share of 1: 2.56 requests, 33 s, backlog
p95 5.2 s.
"""


class PollLoop:
    """Pop due runs one admission at a time and start their polls.

    Args:
        schedule: the heap of due times by run key.
        gate: the door each poll is admitted through.
        take: the run of a key, if it is still tracked.
        poll: polls one run, spending its admission ticket.
        exhausted: called when the quota gives up (429s past its patience).
    """

    def __init__(
        self,
        *,
        schedule: PollSchedule[int],
        gate: RequestGate,
        take: Callable[[int], Tracked | None],
        poll: Callable[[Tracked, Ticket], Coroutine[Any, Any, None]],
        exhausted: Callable[[QuotaExhausted], None],
    ) -> None:
        self._schedule = schedule
        self._gate = gate
        self._take = take
        self._poll = poll
        self._exhausted = exhausted
        self._wake = anyio.Event()

    def wake(self) -> None:
        """The heap's head moved earlier: look again now."""
        self._wake.set()

    def _late_from(self, due: float, key: int) -> float:
        """When the poll of ``key`` starts to count as late: its due time, plus a share of
        its phase's age then (:data:`LATE_SHARE`)."""
        run = self._take(key)
        age = 0.0 if run is None else max(0.0, due - run.phase_start)
        return due + LATE_SHARE * age

    async def run(self, tg: TaskGroup) -> None:
        """Poll due runs until cancelled."""
        schedule = self._schedule
        while True:
            self._wake = anyio.Event()  # before reading the heap, so no wake-up is missed
            now = anyio.current_time()
            head = schedule.head()
            if head is None or head[0] > now:
                with anyio.move_on_after(math.inf if head is None else head[0] - now):
                    await self._wake.wait()
                continue
            try:
                # Since when the run is late: past its patience, its poll goes before creates.
                ticket = await self._gate.admit(RequestKind.RETRIEVE, since=self._late_from(*head))
            except QuotaExhausted as exc:
                self._exhausted(exc)
                continue
            keys = schedule.pop_due(anyio.current_time(), limit=1)
            run = self._take(keys[0]) if keys else None
            if run is None or run.busy:
                ticket.release()  # the admission is spent: rare, cheap
                continue
            run.busy = True
            tg.start_soon(self._poll, run, ticket)
