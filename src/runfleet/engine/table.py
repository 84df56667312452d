"""The table of tracked runs: who is in flight, counted by state, and each run's one end.

Ending a run is one path whatever ends it (a result, the server, a deadline, a cancel, a
refused key, shutdown): it leaves the table, the heap and the webhook index, its figures are
attached to its error, it is counted and logged, and its waiter and callbacks are told once
(invariant 3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping

import anyio

from ..errors import RunDetached, RunError, RunfleetError
from ..kinds.base import RunState
from ..logs import get_logger
from ..results import RunResult
from ..stats import StatsCollector
from .run import Tracked

__all__ = ["RunTable"]

log = get_logger(__name__)


class RunTable:
    """Tracked runs by key; a snapshot by state is O(states), not O(runs).

    Args:
        stats: where ends are counted.
        forget: drops an ended run from the heap, the scouts and the webhook index.
    """

    def __init__(self, *, stats: StatsCollector, forget: Callable[[Tracked], None]) -> None:
        self._runs: dict[int, Tracked] = {}
        self._states: Counter[str] = Counter()
        self._stats = stats
        self._forget = forget
        self._empty = anyio.Event()
        self._empty.set()
        self._broken: RunfleetError | None = None

    @property
    def by_key(self) -> Mapping[int, Tracked]:
        """The runs in flight by key (read-only)."""
        return self._runs

    @property
    def broken(self) -> RunfleetError | None:
        """The error that ended every run (a refused key, an exhausted quota), if one did."""
        return self._broken

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Tracked]:
        return iter(list(self._runs.values()))

    def tracking(self, run: Tracked) -> bool:
        """Whether ``run`` is still in flight."""
        return run.key in self._runs

    def add(self, run: Tracked) -> None:
        """Track a new run."""
        self._runs[run.key] = run
        self._states[run.state.value] += 1
        self._empty = anyio.Event() if self._empty.is_set() else self._empty

    def moved(self, run: Tracked, state: RunState) -> None:
        """Record that a poll found ``run`` in ``state``."""
        if state is not run.state:
            self._states[run.state.value] -= 1
            self._states[state.value] += 1
        run.state = state

    def in_flight(self) -> Counter[str]:
        """Count tracked runs by state."""
        return +self._states  # a copy without the zeros

    async def drained(self) -> None:
        """Wait until no run is tracked."""
        await self._empty.wait()

    def end(
        self, run: Tracked, now: float, result: RunResult | None, error: RunfleetError | None
    ) -> None:
        """End ``run`` with its result or error, once; later calls do nothing."""
        if self._runs.pop(run.key, None) is None:
            return
        self._states[run.state.value] -= 1
        self._forget(run)
        if isinstance(error, RunError) and error.figures is None:
            error.figures = run.figures(now)
        how = "completed" if error is None else error.outcome
        self._stats.run_finished(how, run.latency if error is None else None)
        log.info(
            "run_finished",
            run_id=run.ref.id,
            kind=run.kind.name,
            outcome=how,
            requests=run.requests,
            polls=run.polls,
            error=None if error is None else str(error),
        )
        run.end(result, error)
        if not self._runs:
            self._empty.set()

    def fail_all(self, error: RunfleetError, now: float) -> None:
        """End every run with ``error``; the table stays broken (later starts raise it)."""
        self._broken = error
        for run in self:
            self.end(run, now, None, error)

    def detach_all(self, reason: str, now: float) -> None:
        """End every run with ``RunDetached`` without touching the server (hand them back)."""
        for run in self:
            self.end(run, now, None, RunDetached(run.ref.id, reason))
