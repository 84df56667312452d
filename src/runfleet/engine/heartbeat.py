"""The fleet's heartbeat: how late a timer wakes says how long the event loop was held.

Whatever holds the loop (an async tool that blocks, a user's own code between two awaits, a
burst of CPU) delays every callback, so a task that sleeps a fixed interval and compares when
it woke with when it was due measures the loop's lag, by anyone. It cannot say who held the
loop (the tools' own step timing, :mod:`runfleet.tools.blocking`, does) and it sees a block only
from its next due time on, so it reads up to one interval short. Cost: four wake-ups a second,
a few microseconds each.

It reads the loop's clock, like every timer of the fleet. A fake clock (looptime, trio's
``MockClock``) shows no lag, since a blocked loop does not move it, and each beat would cost
a fast-forward step: hours of fake time would take many seconds of real time in beats alone.
So a beat that arrives in far less real time than it slept ends the heartbeat; on a real clock
none ever does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

__all__ = ["Heartbeat"]

INTERVAL = 0.25
"""Seconds between beats: often enough to see a lag worth naming, rare enough to cost nothing."""


class Heartbeat:
    """Wake every ``interval`` seconds and report how late each wake-up was.

    Args:
        record: told each beat's lag in seconds (0 when on time).
        interval: seconds between beats.
    """

    def __init__(self, record: Callable[[float], None], *, interval: float = INTERVAL) -> None:
        self._record = record
        self._interval = interval

    async def run(self) -> None:
        """Beat until cancelled; the fleet's task group cancels it when the fleet closes."""
        interval, record = self._interval, self._record
        while True:
            due = anyio.current_time() + interval
            began = time.perf_counter()
            await anyio.sleep(interval)
            if time.perf_counter() - began < interval / 2:
                return  # a fake clock: nothing to measure, and beats would slow it down
            # asyncio may wake a timer up to its clock resolution early: that is no lag.
            record(max(0.0, anyio.current_time() - due))
