"""The handle a submitter awaits: a read-only view of one tracked run, and a way to cancel it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any

from ..errors import RunfleetError
from ..results import RunResult
from .run import Tracked

__all__ = ["RunHandle"]

Cancel = Callable[[Tracked, str], Awaitable[bool]]
"""Cancels a run on the server and ends it; the engine's, given to each handle it makes."""


class RunHandle:
    """An awaitable run: ``await handle`` gives its :class:`RunResult` or raises.

    A handle can be awaited any number of times and from any task; ``cancel()`` stops the
    run on the server.
    """

    __slots__ = ("_cancel", "_run")

    def __init__(self, run: Tracked, cancel: Cancel) -> None:
        self._run = run
        self._cancel = cancel
        run.handle = self

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
    def recreated(self) -> str | None:
        """Why the run may exist twice on the server (an ambiguous create...), or None."""
        return self._run.recreated_why

    @property
    def creating(self) -> bool:
        """Whether a create that continues the run (a tool round's response) is on the wire:
        ``on_ids`` is told before it is sent, so a journal can note the intent."""
        return self._run.creating

    @property
    def tag(self) -> Any:
        """Whatever was attached at submission."""
        return self._run.tag

    def done(self) -> bool:
        """Return whether the run has ended (result or error)."""
        return self._run.done.is_set()

    def exception(self) -> RunfleetError | None:
        """Return the error the run ended with, if it has ended with one."""
        return self._run.error

    async def result(self) -> RunResult:
        """Wait for the run to end; return its result.

        Raises:
            RunError: the run failed, expired, timed out or was cancelled.
            AuthError: the server refused the key (every run of the fleet ends so).
        """
        await self._run.done.wait()
        if self._run.error is not None:
            raise self._run.error
        assert self._run.result is not None
        return self._run.result

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self.result().__await__()

    async def cancel(self, reason: str = "cancelled by the caller") -> bool:
        """Cancel the run on the server and end it with ``RunCancelled``.

        Returns False if it had already ended.
        """
        return await self._cancel(self._run, reason)

    def add_done_callback(self, fn: Callable[[RunHandle], None]) -> None:
        """Call ``fn(handle)`` once the run ends (at once if it has)."""
        if self.done():
            fn(self)
        else:
            self._run.callbacks.append(fn)
