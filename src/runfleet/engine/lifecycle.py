"""A run's life from start to end: create or attach, route what each poll sees, end it once.

:class:`Engine` owns every tracked run and everything that happens to one: its create (retried
through the one door), the routing of each observation — reschedule, answer tool calls (at most
once per round: invariant 4), fetch the reply and resolve, or fail — its deadline and stall, and
its one end (invariant 3: result, failure, timeout or cancellation, also at shutdown, on a
drain and when the loop crashes). :class:`~runfleet.fleet.Fleet` is its public face; when each
run is polled next is :mod:`runfleet.polling.pacing`'s, and the loop is
:mod:`runfleet.engine.loop`'s.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ..admission.gate import RequestGate, Ticket
from ..errors import RunCancelled, RunError, RunfleetError
from ..kinds.base import Kind, RunRef
from ..logs import get_logger
from ..polling.learning import RunTimes
from ..polling.pacing import Pacer
from ..polling.windows import WINDOW_DEADLINE, window_span
from ..stats import StatsCollector
from ..tools import ToolRegistry
from .creates import Creator, OnAmbiguous
from .failures import Retrier, auth_error, refusal
from .handle import RunHandle
from .heartbeat import Heartbeat
from .loop import PollLoop
from .routing import Router
from .run import Tracked
from .table import RunTable

__all__ = ["Engine"]

log = get_logger(__name__)
OnIds = Callable[[RunHandle], None]
"""The submitter's hook: a run's ids exist now, a Responses chain is about to move
(``handle.creating``), or moved to a new id."""
Started = tuple[RunHandle, RunfleetError | None]
"""A started run's handle, and the error its create was refused with (the handle ends so)."""


class Engine:
    """Every tracked run of one fleet, from its start to its one end; its state is private.

    Args:
        gate: the one door; every request of every run passes it.
        tools: answers tool calls.
        times: what is learned of run times per key.
        stats: where runs' ends are counted.
        rng: the source of jitter.
        key_hint: the API key's last characters, for the error of a refused key.
        on_stall: a stalled run is ``"report"``-ed, or cancelled and ``"recreate"``-d once.
        on_ambiguous_create: a create that may have been applied is sent again (``"retry"``,
            the run marked recreated) or ends its run with ``AmbiguousCreate`` (``"fail"``).
        max_retries: tries after the first per create, submit or fetch on transient errors.
        safety_poll: seconds between safety-net polls of runs covered by webhooks (None: no
            webhooks).
    """

    def __init__(
        self,
        *,
        gate: RequestGate,
        tools: ToolRegistry,
        times: RunTimes[tuple[str, ...]],
        stats: StatsCollector,
        rng: random.Random,
        key_hint: str,
        on_stall: Literal["report", "recreate"],
        max_retries: int,
        safety_poll: float | None = None,
        on_ambiguous_create: OnAmbiguous = "retry",
    ) -> None:
        self._definitions = {
            "responses": tuple(dict(t) for t in tools.definitions("responses")),
            "assistants": tuple(dict(t) for t in tools.definitions("assistants")),
        }
        self._key_hint = key_hint
        self._seq = itertools.count()
        self._runs = RunTable(stats=stats, forget=self._forget)
        self._pacer: Pacer[Tracked] = Pacer(
            runs=self._runs.by_key, times=times, rng=rng, safety_poll=safety_poll,
            signal=self._signal,
        )  # fmt: skip
        retrier = Retrier(max_retries, rng)
        self._creator = Creator(retrier=retrier, stats=stats, on_ambiguous=on_ambiguous_create)
        self._router = Router(
            runs=self._runs,
            pacer=self._pacer,
            times=times,
            tools=tools,
            definitions=self._definitions,
            stats=stats,
            retrier=retrier,
            key_hint=key_hint,
            on_stall=on_stall,
            creator=self._creator,
            max_errors=max(10, 2 * max_retries),
        )
        self._loop = PollLoop(
            schedule=self._pacer.schedule,
            gate=gate,
            take=self._runs.by_key.get,
            poll=self._poll,
            exhausted=self.fail_all,
        )
        self._heartbeat = Heartbeat(stats.loop_lagged)
        self._warned_window = False

    @staticmethod
    def now() -> float:
        """Return the event loop's clock, the one clock of the fleet."""
        return anyio.current_time()

    # -- the fleet's view ----------------------------------------------------------------------

    @property
    def broken(self) -> RunfleetError | None:
        """The error that ended every run (a refused key, an exhausted quota), if one did."""
        return self._runs.broken

    def definitions(self, kind: str) -> tuple[dict[str, Any], ...]:
        """The tool definitions of this fleet in ``kind``'s wire shape."""
        return self._definitions[kind]

    def in_flight(self) -> Counter[str]:
        """Count tracked runs by state (kept as states change: a snapshot is O(states))."""
        return self._runs.in_flight()

    def next_poll(self) -> float | None:
        """Seconds until the next poll is due, or None with nothing to poll."""
        due = self._pacer.schedule.next_due()
        return None if due is None else max(0.0, due - self.now())

    async def drained(self) -> None:
        """Wait until no run is tracked."""
        await self._runs.drained()

    async def loop(self, tg: TaskGroup) -> None:
        """Poll due runs until cancelled; the fleet runs this once in its task group."""
        tg.start_soon(self._heartbeat.run)  # the loop's lag, for the stats; ends with the group
        try:
            await self._loop.run(tg)
        except Exception as exc:
            # A bug of ours must not leave a waiter hanging (invariant 3): end them all.
            log.exception("poll_loop_failed")
            self.fail_all(RunfleetError(f"the poll loop failed: {exc!r}"))
            raise

    def _signal(self) -> None:
        self._loop.wake()

    def _forget(self, run: Tracked) -> None:
        self._pacer.forget(run)

    # -- starting and attaching ----------------------------------------------------------------

    def _track(
        self,
        kind: Kind,
        spec: Any,
        ref: RunRef,
        learn_key: tuple[str, ...],
        timeout: float | None,
        tag: Any,
        on_ids: OnIds | None,
    ) -> Tracked:
        created = self.now()
        run = Tracked(
            key=next(self._seq),
            kind=kind,
            spec=spec,
            ref=ref,
            learn_key=learn_key,
            created=created,
            phase_start=created,
            deadline=None if timeout is None else created + timeout,
            tag=tag,
            seen_working=created,
            on_ids=on_ids,
        )
        RunHandle(run, self.cancel)
        self._runs.add(run)
        return run

    async def start(
        self,
        kind: Kind,
        spec: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the run's deadline, not this call's
        tag: Any,
        on_ids: OnIds | None = None,
    ) -> Started:
        """Create a run and track it; a create refused for good ends its handle with the error.

        ``on_ids(handle)`` is called as soon as the run's ids exist and each time a Responses
        chain moves to a new id, before anything else happens to the run.
        """
        spec = kind.with_tools(spec, self._definitions[kind.name])
        learn_key = kind.learn_key(spec)
        timeout = self._window_deadline(learn_key, timeout)
        run = self._track(kind, spec, RunRef(), learn_key, timeout, tag, on_ids)
        try:
            obs = await self._creator.create(run, spec)
        except Exception as exc:
            error = self._refused(exc)
            self._router.end(run, None, error)
            return run.handle, error
        except BaseException:
            self._router.end(run, None, RunCancelled(run.ref.id or "-", "submission cancelled"))
            raise
        # Its life on the server starts now, not when it was submitted: a create that waited
        # for tokens or a request slot would teach run times that are the wait's (500 creates
        # at once on a loaded machine queued up to an hour of an 8h scenario at the door).
        run.phase_start = run.seen_working = self.now()
        log.debug("run_submitted", run_id=run.ref.id, kind=kind.name)
        try:
            run.ids_changed()  # the submitter's hook: if it raises, this run ends, no other
            await self._router.route(run, obs)
        except Exception as exc:
            self._failed(run, exc)
        return run.handle, None

    def _window_deadline(self, learn_key: tuple[str, ...], timeout: float | None) -> float | None:
        """Return the deadline of a run learned under ``learn_key``: in a discounted window,
        none given is the window and a margin (the API targets completion within it), and one
        shorter than the window is warned about once, as it will likely cancel its run."""
        span = window_span(self._pacer.times.policy, learn_key)
        if span is None:
            return timeout
        if timeout is None:
            return span * WINDOW_DEADLINE
        if timeout < span and not self._warned_window:
            self._warned_window = True
            log.warning("deadline_within_window", timeout=timeout, window=span, key=learn_key)
        return timeout

    def attach(
        self,
        kind: Kind,
        ref: RunRef,
        *,
        spec: Any,
        timeout: float | None,
        tag: Any,
        on_ids: OnIds | None = None,
    ) -> RunHandle:
        """Track a run that exists already (created elsewhere, or before a restart); poll now.

        Its tool calls are answered with ``spec`` when given, else with what the kind
        continues a watched run with (a Responses chain: its own model, this fleet's tools).
        """
        if spec is not None:
            spec = kind.with_tools(spec, self._definitions[kind.name])
        key = kind.watch_key(spec)
        run = self._track(kind, spec, ref, key, self._window_deadline(key, timeout), tag, on_ids)
        self._wake(run)
        handle: RunHandle = run.handle
        return handle

    # -- waking --------------------------------------------------------------------------------

    def _wake(self, run: Tracked) -> None:
        """Poll this run now; after its in-flight poll if busy."""
        if run.busy:
            run.woken = True
        elif self._runs.tracking(run):
            self._pacer.poll_at(run, self.now())

    def notify(self, response_id: str) -> bool:
        """Wake the run waiting on ``response_id`` (a webhook said it ended); False if unknown."""
        run = self._pacer.notified(response_id)
        if run is None:
            return False
        self._wake(run)
        return True

    def on_waiting(self, hook: Callable[[str, bool], None] | None) -> bool:
        """Tell ``hook(response_id, waiting)`` as runs start and stop waiting on a response id
        (webhooks on); the ids waited on now are told at once. None removes it. Return
        whether the hook will hear of any run: with webhooks off, none waits on an event."""
        if hook is not None and self._pacer.on_waiting is not None:
            raise ValueError("the fleet's waiting runs are followed already (one relay a fleet)")
        self._pacer.on_waiting = hook
        if hook is not None:
            for response_id in list(self._pacer.by_response):
                hook(response_id, True)
        return self._pacer.safety_poll is not None

    # -- one poll and what it saw --------------------------------------------------------------

    async def _poll(self, run: Tracked, ticket: Ticket) -> None:
        try:
            run.requests += 1
            run.polls += 1
            run.polls_in_phase += 1
            try:
                obs = await run.kind.observe(run.ref, ticket)
            finally:
                ticket.release()  # spent by the request; released here if it never left
            run.errors = 0
            await self._router.route(run, obs)
        except Exception as exc:  # CancelledError is a BaseException and passes through
            self._failed(run, exc)
        finally:
            run.busy = False
            if run.woken and self._runs.tracking(run):
                run.woken = False
                self._pacer.poll_at(run, self.now())

    def _failed(self, run: Tracked, exc: Exception) -> None:
        """Apply the failure policy; a bug in it ends this run, never the loop (invariant 3)."""
        try:
            self._router.failed(run, exc)
        except Exception as bug:
            log.exception("run_internal_error", run_id=run.ref.id)
            self._router.end(run, None, RunError(run.ref.id, f"failed inside runfleet: {bug!r}"))

    # -- the ends of a run ---------------------------------------------------------------------

    async def cancel(self, run: Tracked, reason: str) -> bool:
        """Cancel a run on the server and end it with ``RunCancelled``; False if it had ended."""
        if not self._runs.tracking(run):
            return False
        run.cancel_reason = reason
        self._pacer.schedule.cancel(run.key)
        await self._router.cancel_quietly(run)
        self._router.end(run, None, RunCancelled(run.ref.id, reason))
        return True

    def fail_all(self, error: RunfleetError) -> None:
        """End every run with ``error``; later submissions raise it too."""
        self._runs.fail_all(error, self.now())

    def _refused(self, exc: Exception) -> RunfleetError:
        """Return what the submitter of a refused create sees; a refused key ends every run."""
        error = auth_error(exc, self._key_hint)
        if error is not None:
            self.fail_all(error)
            return error
        return refusal(exc)

    def drain(
        self,
        *,
        timeout: float | None,
        then: Literal["detach", "cancel"],
        reason: str,
    ) -> Coroutine[Any, Any, int]:
        """Check the arguments now; the coroutine waits, then ``then``-s the rest and counts them.

        The check comes before anything changes, so a misuse closes nothing. Starting nothing
        new is the caller's part (the fleet refuses submissions once the arguments pass).

        Raises:
            ValueError: ``then`` is neither, or ``timeout`` is negative.
        """
        if then not in ("detach", "cancel"):
            raise ValueError(f"then must be 'detach' or 'cancel', not {then!r}")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        return self._drain(math.inf if timeout is None else timeout, then, reason)

    async def _drain(self, timeout: float, then: str, reason: str) -> int:  # noqa: ASYNC109
        """Wait up to ``timeout`` s for every run; end the rest, also if cancelled meanwhile."""
        try:
            with anyio.move_on_after(timeout):
                await self.drained()
        finally:
            left = len(self._runs)
            if then == "cancel" and left:
                # Shielded and bounded: even when the caller is being cancelled, the runs are.
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await self.cancel_all(reason)
            self.detach_all(f"{reason}; the run may still be alive on the server")
        return left

    def detach_all(self, reason: str) -> None:
        """End every run with ``RunDetached`` without touching the server (hand them back)."""
        self._runs.detach_all(reason, self.now())

    async def cancel_all(self, reason: str) -> None:
        """Cancel every run on the server, concurrently, and end each with ``RunCancelled``."""
        async with anyio.create_task_group() as tg:
            for run in self._runs:
                tg.start_soon(self.cancel, run, reason)
