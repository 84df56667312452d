"""A run the fleet tracks, and the handle its submitter awaits."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import RunfleetError
from ..kinds.base import Kind, RunRef, RunState
from ..results import RunResult, ToolRound

if TYPE_CHECKING:
    from .loop import Engine

__all__ = ["RunHandle", "Tracked"]


@dataclass(eq=False, slots=True)
class Tracked:
    """Everything the loop knows of one run. Idle, it is a heap entry and this record."""

    key: int
    kind: Kind
    spec: Any
    ref: RunRef
    learn_key: tuple[str, ...]
    created: float
    phase_start: float
    deadline: float | None
    tag: Any = None
    handle: RunHandle | None = None
    state: RunState = RunState.QUEUED
    status: str = "queued"
    attempt: int = 0  # polls since the status last changed (the classic backoff's counter)
    polls_in_phase: int = 0
    first_poll_at: float = 0.0  # age of the phase's first poll (what the learned fit checks)
    seen_working: float = 0.0  # last poll that found it working: detection latency's start
    queued_until: float | None = None
    requests: int = 0
    polls: int = 0
    latency: float = 0.0
    rounds: list[ToolRound] = field(default_factory=list)
    answered: frozenset[str] = frozenset()  # call ids of the round already submitted
    busy: bool = False  # a request or a tool round for it is under way
    woken: bool = False  # someone asked for a poll while it was busy
    recreated: bool = False
    stall_reported: bool = False
    errors: int = 0  # consecutive transient failures
    scout: bool | None = None  # polls for its unlearned key's cohort (None: not decided yet)
    cancel_reason: str | None = None
    on_ids: Callable[[RunHandle], None] | None = None  # the run's ids appeared or moved

    @property
    def followup(self) -> bool:
        """Whether the current phase continues after tool outputs (it runs shorter)."""
        return bool(self.rounds)


class RunHandle:
    """An awaitable run: ``await handle`` gives its :class:`RunResult` or raises.

    A handle can be awaited any number of times and from any task; ``cancel()`` stops the
    run on the server.
    """

    __slots__ = ("_callbacks", "_done", "_engine", "_error", "_result", "_run")

    def __init__(self, engine: Engine, run: Tracked) -> None:
        self._engine = engine
        self._run = run
        self._done = anyio.Event()
        self._result: RunResult | None = None
        self._error: RunfleetError | None = None
        self._callbacks: list[Callable[[RunHandle], None]] = []

    def __repr__(self) -> str:
        return f"<RunHandle {self._run.kind.name} {self.id or '-'} {self.status}>"

    @property
    def id(self) -> str:
        """The current id: the run's, or the latest response of a Responses chain."""
        return self._run.ref.id

    @property
    def thread_id(self) -> str | None:
        """The thread of an Assistants run."""
        return self._run.ref.thread_id

    @property
    def kind(self) -> str:
        """``responses`` or ``assistants``."""
        return self._run.kind.name

    @property
    def status(self) -> str:
        """OpenAI's status as last observed."""
        return self._run.status

    @property
    def tag(self) -> Any:
        """Whatever was attached at submission."""
        return self._run.tag

    def done(self) -> bool:
        """Return whether the run has ended (result or error)."""
        return self._done.is_set()

    def exception(self) -> RunfleetError | None:
        """Return the error the run ended with, if it has ended with one."""
        return self._error

    async def result(self) -> RunResult:
        """Wait for the run to end; return its result.

        Raises:
            RunError: the run failed, expired, timed out or was cancelled.
            AuthError: the server refused the key (every run of the fleet ends so).
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self.result().__await__()

    async def cancel(self, reason: str = "cancelled by the caller") -> bool:
        """Cancel the run on the server and end it with ``RunCancelled``.

        Returns False if it had already ended.
        """
        return await self._engine.cancel(self._run, reason)

    def add_done_callback(self, fn: Callable[[RunHandle], None]) -> None:
        """Call ``fn(handle)`` once the run ends (at once if it has)."""
        if self.done():
            fn(self)
        else:
            self._callbacks.append(fn)

    def _resolve(self, result: RunResult | None, error: RunfleetError | None) -> bool:
        if self._done.is_set():
            return False
        self._result, self._error = result, error
        self._done.set()
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)
        return True
