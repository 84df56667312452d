"""When to poll each run: the heap of due times, and the classic loop every schedule is
measured against.

Pure code, like trio's deadline heap: nothing here reads a clock, sleeps or does I/O. Every
method that needs the time takes ``now`` (seconds on the event loop's clock) and randomness
comes from an injected :class:`random.Random`, so the poll loop, the tests and the simulator
drive the same code with real, fake or fast-forwarded time.

Idle runs cost one heap entry each: there is no task and no timer per run. Rescheduling
pushes a new entry instead of searching the heap; the old entry goes stale and is skipped when
it surfaces, and the heap is rebuilt from the live entries once stale ones outnumber them, so
memory stays within about twice the number of scheduled runs however often they are moved.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Backoff", "PollSchedule", "floor_delay", "jittered"]

K = TypeVar("K", bound=Hashable)


class PollSchedule(Generic[K]):
    """Hold one due time per run key and hand back the keys whose time has come.

    Keys are opaque and only need to be hashable; they are never compared, because the
    sequence number in each ``(due, seq, key)`` entry breaks ties between equal due times,
    first scheduled first out.

    Example::

        schedule = PollSchedule[str]()
        schedule.schedule("resp_1", due=now + 0.5)
        for key in schedule.pop_due(loop.time()):
            ...  # poll it, then schedule it again or drop it
    """

    __slots__ = ("_entries", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        # The one live entry per key. An entry in the heap is live only if it *is* (identity)
        # the entry stored here; every other entry for the key is stale.
        self._entries: dict[K, tuple[float, int, K]] = {}
        self._seq = itertools.count()

    def schedule(self, key: K, due: float) -> None:
        """Poll ``key`` at ``due``, replacing any due time it already had.

        Raises:
            ValueError: if ``due`` is NaN, which would corrupt the heap's ordering.
        """
        if math.isnan(due):
            raise ValueError(f"due must be a number, got {due!r}")
        entry = (due, next(self._seq), key)
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)
        self._prune()

    def cancel(self, key: K) -> bool:
        """Forget ``key``; return ``True`` if it was scheduled."""
        if self._entries.pop(key, None) is None:
            return False
        self._prune()
        return True

    def pop_due(self, now: float, *, limit: int | None = None) -> list[K]:
        """Remove and return the keys due by ``now`` (inclusive), earliest first.

        Args:
            now: the current time on the event loop's clock.
            limit: return at most this many; the rest stay scheduled in order, so a poll loop
                that can only admit a few requests leaves the others where they are.

        Raises:
            ValueError: if ``limit`` is negative.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        heap, entries = self._heap, self._entries
        due: list[K] = []
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            entry = heapq.heappop(heap)
            key = entry[2]
            if entries.get(key) is entry:
                del entries[key]
                due.append(key)
        return due

    def next_due(self) -> float | None:
        """Return the earliest live due time, or ``None`` when nothing is scheduled."""
        heap, entries = self._heap, self._entries
        # Drop stale entries off the top so the answer is a live key's due time.
        while heap and entries.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def head(self) -> tuple[float, K] | None:
        """Return the earliest live due time and its key, or ``None`` when nothing is scheduled."""
        if self.next_due() is None:
            return None
        due, _, key = self._heap[0]
        return due, key

    def due_of(self, key: K) -> float | None:
        """Return when ``key`` is due, or ``None`` if it is not scheduled."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<PollSchedule scheduled={len(self._entries)} heap_entries={len(self._heap)} "
            f"next_due={self.next_due()}>"
        )

    def _prune(self) -> None:
        """Rebuild the heap from live entries once stale ones outnumber them."""
        # Each rebuild costs O(live) and follows at least `live` stale pushes or cancels, so it
        # is O(1) amortised, and the heap never holds more than 2 * live + 1 entries.
        if len(self._heap) - len(self._entries) > len(self._entries):
            self._heap = list(self._entries.values())
            heapq.heapify(self._heap)


@dataclass(frozen=True, slots=True)
class Backoff:
    """The classic poll loop: exponential backoff with symmetric jitter.

    The defaults are *the* classic loop (first poll after 0.5 s, each delay 1.5 times the last,
    at most 5 s apart) that the learned schedule falls back to, that ``runfleet bench`` runs as
    ``classic`` and that a batch's summary counts requests against: one definition, so all
    three compare with the same loop.

    The delay before poll number ``attempt`` (0-based) is ``initial * factor**attempt``, capped
    at ``cap``, scaled by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` so runs
    started together drift apart, then clamped to ``[min_interval, cap]``. The caller counts
    ``attempt`` from the run's (re)start: its creation, or the answer to its latest tool round,
    after which it is likely to move again soon. Going from queued to in progress does not
    reset it: that says nothing about when the run will finish, and a reset would cost a poll
    or two per run.

    Raises:
        ValueError: if a field is negative or not finite, ``factor < 1``, ``jitter`` is
            outside ``[0, 1)``, ``initial`` is 0, or ``cap`` is below ``initial`` or
            ``min_interval``.
    """

    initial: float = 0.5
    """Seconds before the first poll after a (re)start."""
    factor: float = 1.5
    """Growth of the delay per poll."""
    cap: float = 5.0
    """Longest delay between two polls, jitter included."""
    jitter: float = 0.2
    """Relative spread of each delay: 0.2 draws from 80 % to 120 %."""
    min_interval: float = 0.05
    """Shortest delay between two polls of one run."""

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "cap", "jitter", "min_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Backoff.{name} must be a finite number >= 0, got {value!r}")
        if self.initial == 0:
            raise ValueError("Backoff.initial must be > 0")
        if self.factor < 1:
            raise ValueError(
                f"Backoff.factor must be >= 1 (delays never shrink), got {self.factor}"
            )
        if self.jitter >= 1:
            raise ValueError(f"Backoff.jitter must be in [0, 1), got {self.jitter}")
        if self.cap < self.initial or self.cap < self.min_interval:
            raise ValueError(
                f"Backoff.cap ({self.cap}) must be >= initial ({self.initial}) "
                f"and >= min_interval ({self.min_interval})"
            )

    def scaled(self, scale: float) -> Backoff:
        """Return this loop with its durations (``initial``, ``cap``, ``min_interval``)
        multiplied by ``scale``; ``factor`` and ``jitter`` are ratios and stay.

        Raises:
            ValueError: if ``scale`` is not a finite number > 0.
        """
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        return dataclasses.replace(
            self,
            initial=self.initial * scale,
            cap=self.cap * scale,
            min_interval=self.min_interval * scale,
        )

    def base_delay(self, attempt: int) -> float:
        """Return the un-jittered delay before poll number ``attempt``.

        Raises:
            ValueError: if ``attempt`` is negative.
        """
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # Compare exponents instead of computing factor**attempt, which overflows a float
        # for runs that have been polled a few thousand times.
        if self.factor == 1 or attempt < math.log(self.cap / self.initial, self.factor):
            return min(self.cap, self.initial * self.factor**attempt)
        return self.cap

    def next_delay(
        self, attempt: int, rng: random.Random, *, poll_after: float | None = None
    ) -> float:
        """Return the seconds to wait before poll number ``attempt``.

        Args:
            attempt: polls made since the run (re)started, 0 for the first.
            rng: the source of jitter; inject a seeded one for reproducible schedules.
            poll_after: the server's ``openai-poll-after-ms`` hint in seconds, read from the
                latest response. The result is never below it, even above ``cap``.

        Raises:
            ValueError: if ``attempt`` or ``poll_after`` is negative.
        """
        delay = jittered(self.base_delay(attempt), self.jitter, rng)
        return floor_delay(min(delay, self.cap), self.min_interval, poll_after)

    def gap_at(self, age: float) -> float:
        """Return the un-jittered gap the loop has reached ``age`` seconds after a (re)start,
        before the cap.

        Its polls at ``initial * (factor**k - 1) / (factor - 1)`` are ``initial * factor**k``
        apart, so the gap grows linearly with age; a schedule that must never poll denser than
        the classic loop compares with this.
        """
        return self.initial + (self.factor - 1) * age

    def polls_for(self, seconds: float) -> int:
        """Count the polls the loop, un-jittered and unhinted, spends on a run of ``seconds``.

        The last of them is the first at or after ``seconds``, which sees the run done; a run
        that takes no time still costs one. This is what the classic loop would have spent,
        for comparing another schedule's requests with it.
        """
        waited, polls = 0.0, 0
        while True:
            waited += max(self.base_delay(polls), self.min_interval)
            polls += 1
            if waited >= seconds:
                return polls


def jittered(delay: float, jitter: float, rng: random.Random) -> float:
    """Scale ``delay`` by a factor drawn from ``[1 - jitter, 1 + jitter]``.

    Shared by the classic loop, the learned schedule's window and tail, and the webhooks'
    safety-net poll, so that runs started together drift apart the same way under each.
    """
    return delay * (1 + rng.uniform(-jitter, jitter)) if jitter else delay


def floor_delay(delay: float, min_interval: float, poll_after: float | None) -> float:
    """Raise ``delay`` to ``min_interval`` and to the server's poll-after hint.

    The last step of every schedule: whatever it computed, the server's hint wins.

    Raises:
        ValueError: if ``poll_after`` is negative or NaN.
    """
    if poll_after is None:
        return max(delay, min_interval)
    if not poll_after >= 0:  # written this way to reject NaN too
        raise ValueError(f"poll_after must be >= 0 seconds, got {poll_after!r}")
    return max(delay, min_interval, poll_after)
