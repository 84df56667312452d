"""Scouts: before a key is learned, a few runs of it poll the classic way for all of them.

A batch starts a hundred runs of one model together. Until 20 of them have finished, nothing
is learned, and the classic loop polls each of the hundred at 0.5, 1.25, 2.4 and 4.1 s: four
hundred requests that all answer "still running", since runs of one model take similar times.
One run seen done, though, says that runs of that key can be done at that age.

So while a key is not learned, its first ``scouts`` runs in flight poll the classic way, and
every other run skips each classic poll at an age younger than the youngest at which a run of
its key has been seen done, for at most ``max_skipped`` polls (so a key with no completions
yet, or stalled, still gets polled). When a run of the key is seen done, each run held back
is polled at a random point of the classic gap after that age (or after now, if it is
older); each scout seen done meanwhile takes a tenth (one of ``scouts``) off it. A run alone,
or one of a few, is a scout: it gets the classic loop exactly. Nothing here reads a clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["Scouting"]

K = TypeVar("K", bound=Hashable)


class Scouted(Protocol):
    """What scouting needs of a tracked run."""

    key: int
    phase_start: float
    attempt: int
    scout: bool | None


R = TypeVar("R", bound=Scouted)


class Scouting(Generic[K, R]):
    """Decide which polls of runs of unlearned keys are worth making, and when held runs go.

    Args:
        scouts: runs of one key polled the classic way at once; the others wait for them.
        max_skipped: most classic polls one run skips in a phase: only its first ones.
    """

    __slots__ = ("_held", "_released", "_scouts", "_scouts_done", "max_skipped", "scouts")

    def __init__(self, *, scouts: int = 10, max_skipped: int = 4) -> None:
        if scouts < 1:
            raise ValueError(f"scouts must be at least 1, got {scouts}")
        if max_skipped < 0:
            raise ValueError(f"max_skipped must be >= 0, got {max_skipped}")
        self.scouts = scouts
        self.max_skipped = max_skipped
        self._scouts: Counter[K] = Counter()
        self._held: dict[K, dict[int, tuple[R, float]]] = {}
        # Released, not yet polled: run, its phase's start, where its spread starts, its draw
        # in it (seconds at the full gap).
        self._released: dict[K, dict[int, tuple[R, float, float, float]]] = {}
        self._scouts_done: Counter[K] = Counter()  # seen done while runs were held or released

    def delay(
        self,
        run: R,
        key: K,
        age: float,
        delay: float,
        step: Callable[[float, int], float],
        earliest: float | None,
    ) -> float:
        """Return the delay to the next poll of ``run`` worth making (``delay`` or later).

        Args:
            run: a run of an unlearned key, rescheduled at ``age`` seconds into its phase.
            key: what its times are learned under.
            delay: the classic loop's delay to its next poll; ``run.attempt`` already counts it
                (1 for the first poll of a phase).
            step: the classic delay before poll number ``attempt`` made at ``age``.
            earliest: the youngest age at which a run of ``key`` was seen done, if any.
        """
        if run.scout is None:
            run.scout = self._scouts[key] < self.scouts
            if run.scout:
                self._scouts[key] += 1
        if run.scout:
            return delay
        held = False
        # ``attempt`` counts the classic polls of this phase: only its first ones are skipped.
        while run.attempt <= self.max_skipped and (earliest is None or earliest > age + delay):
            delay += step(age + delay, run.attempt)
            run.attempt += 1
            held = True
        if held:
            self._held.setdefault(key, {})[run.key] = (run, run.phase_start)
        return delay

    def release(
        self,
        key: K,
        earliest: float,
        now: float,
        polls_by: Callable[[float], int],
        spread: Callable[[float], float],
        rng: random.Random,
        *,
        scout: bool,
    ) -> list[tuple[R, float]]:
        """A run of ``key`` was seen done; return the runs held back with when to poll each.

        Each is polled at a random point within ``spread(age)`` (the classic loop's gap at
        that age) after the age a run was seen done at, or after now if it is older. All at
        that age, a cohort started together found few of its runs done there (the first seen
        done is the quickest of the scouts), then went on at the classic gaps: on runs of
        about 4 s (lognormal, sigma 0.6, a hundred at once) its held runs cost 2.9-3.3 polls
        each; spread, 2.4-2.9, and their first polls land at many ages, which is what the
        estimate learns the runs' spread from. Scouts seen done (``scout``) while runs wait for
        their release narrow it: with ``k`` of them, to ``1 - k / scouts`` of the gap. When
        runs end close together (a fixed 3 s: the scouts are all seen done within the jitter
        of one classic poll), the held ones are polled close to when the classic loop would
        have. Halving it at each scout instead undid most of the saving on lognormal runs:
        a round of classic polls sees several scouts done even when most runs are not. A run
        done before its release waits at most one gap more; spread over two gaps, runs of 1 s
        were seen later than by the classic loop (``benchmarks/first_wave.py``).

        ``polls_by(age)``: the classic polls a run makes before ``age``. Holding counted the
        skipped polls as made, so a released run found still working would next wait the
        gap after its last *skipped* poll (3.8 s for four skipped), not the gap at its age:
        a first wave of 100 runs of 1 s saw p95 detection 3.5 s against the classic loop's
        1.3 s. Released, a run's count goes back to its age's, and it goes on from there as
        the classic loop would.

        Returns:
            every run released and not yet polled, with when to poll it (the caller moves a
            run's poll only earlier).
        """
        held = self._held.pop(key, None)
        released = self._released.get(key)
        if not held and not released:
            return []
        if scout:
            self._scouts_done[key] += 1
        released = self._released.setdefault(key, {})
        for run, phase in (held or {}).values():
            start = max(now, phase + earliest)  # the evidence's age, or now if it is older
            released[run.key] = (run, phase, start, rng.random() * spread(start - phase))
        left = max(0.0, 1.0 - self._scouts_done[key] / self.scouts)
        out = []
        for run_key, (run, phase, start, offset) in list(released.items()):
            if run.phase_start != phase:
                del released[run_key]  # a new phase since it was held
                continue
            due = max(now, start + left * offset)
            run.attempt = min(run.attempt, polls_by(due - phase))
            out.append((run, due))
        return out

    def polled(self, run: R, key: K) -> None:
        """A poll found ``run`` still working: its release, if it had one, is spent."""
        released = self._released.get(key)
        if released is not None and released.pop(run.key, None) is not None:
            self._forget_if_idle(key)

    def ended(self, run: R, key: K) -> None:
        """The run's phase ended (seen done, restarted, or the run is gone): free its place."""
        if run.scout:
            self._scouts[key] -= 1
            if self._scouts[key] <= 0:
                del self._scouts[key]
        run.scout = None
        held = self._held.get(key)
        if held is not None:
            held.pop(run.key, None)
            if not held:
                del self._held[key]
        released = self._released.get(key)
        if released is not None:
            released.pop(run.key, None)
        self._forget_if_idle(key)

    def _forget_if_idle(self, key: K) -> None:
        if not self._released.get(key):
            self._released.pop(key, None)
            if key not in self._held:
                self._scouts_done.pop(key, None)

    def __repr__(self) -> str:
        held = sum(len(h) for h in self._held.values())
        released = sum(len(r) for r in self._released.values())
        return f"<Scouting scouts={sum(self._scouts.values())} held={held} released={released}>"
