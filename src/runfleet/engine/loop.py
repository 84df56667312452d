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

__all__ = ["PollLoop"]


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

    async def run(self, tg: TaskGroup) -> None:
        """Poll due runs until cancelled."""
        schedule = self._schedule
        while True:
            self._wake = anyio.Event()  # before reading the heap, so no wake-up is missed
            now = anyio.current_time()
            due = schedule.next_due()
            if due is None or due > now:
                with anyio.move_on_after(math.inf if due is None else due - now):
                    await self._wake.wait()
                continue
            try:
                # Since when the run is due: a poll late past its patience goes before creates.
                ticket = await self._gate.admit(RequestKind.RETRIEVE, since=due)
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
