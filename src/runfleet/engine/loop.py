"""The one poll loop: a heap of due times, one admission at a time, and routing of what polls see.

Idle runs are heap entries (invariant 2). The loop waits for the earliest due time (or a
wake-up when an earlier one arrives), takes a concurrency slot and one quota admission for a
poll, pops the most urgent run *after* admission — so a run woken meanwhile goes first — and
polls it in a short task of the fleet's task group. What the poll sees is routed: reschedule,
answer tool calls (at most once per round: invariant 4), fetch the reply and resolve, or fail.

When each run is polled next is :mod:`runfleet.polling.pacing`'s. With webhooks (``safety_poll``
set), a Responses run waits on a slow safety-net poll instead of the learned schedule, and
:meth:`Engine.notify` wakes it by response id when an event says it ended: a lost event costs
latency, never the run.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio
import openai
import structlog
from anyio.abc import TaskGroup

from ..admission.gate import RequestGate
from ..admission.quota import Priority
from ..errors import (
    AuthError,
    QuotaExhausted,
    RunCancelled,
    RunDetached,
    RunError,
    RunExpired,
    RunFailed,
    RunfleetError,
    RunIncomplete,
    RunNotFound,
    RunTimeout,
    ToolError,
)
from ..kinds.base import NEEDS_CLIENT, Kind, Observation, RunRef, RunState
from ..polling.learning import RunTimes
from ..polling.pacing import Pacer
from ..polling.schedule import Backoff
from ..results import RunFigures, RunResult, ToolRound
from ..stats import StatsCollector
from ..tools import ToolRegistry
from .handle import RunHandle, Tracked

__all__ = ["Engine"]

log = structlog.get_logger("runfleet")
T = TypeVar("T")

_TRANSIENT = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,
    openai.APITimeoutError,
)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class Engine:
    """The loop and the routing; :class:`~runfleet.fleet.Fleet` is its public face."""

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
        watched_spec: Callable[[Any], Any] | None = None,
        safety_poll: float | None = None,
    ) -> None:
        self.gate = gate
        self.tools = tools
        self.times = times
        self.stats = stats
        self.rng = rng
        self.key_hint = key_hint
        self.on_stall = on_stall
        self.max_retries = max_retries
        self.watched_spec = watched_spec
        self.retry = Backoff(initial=0.5, factor=2.0, cap=10.0)
        self.runs: dict[int, Tracked] = {}
        self._states: Counter[str] = Counter()  # runs by state, kept as they change
        self.pacer = Pacer(
            runs=self.runs, times=times, rng=rng, safety_poll=safety_poll, signal=self._signal
        )
        self.schedule = self.pacer.schedule
        self.broken: RunfleetError | None = None
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._empty = anyio.Event()
        self._empty.set()
        self._tg: TaskGroup | None = None

    @staticmethod
    def now() -> float:
        """Return the event loop's clock, the one clock of the fleet."""
        return anyio.current_time()

    # -- the loop ------------------------------------------------------------------------------

    async def loop(self, tg: TaskGroup) -> None:
        """Poll due runs until cancelled; the fleet runs this once in its task group."""
        self._tg = tg
        try:
            await self._loop(tg)
        except Exception as exc:
            # A bug of ours must not leave a waiter hanging (invariant 3): end them all.
            log.exception("poll_loop_failed")
            self.fail_all(RunfleetError(f"the poll loop failed: {exc!r}"))
            raise

    async def _loop(self, tg: TaskGroup) -> None:
        limiter = self.gate.limiter
        while True:
            self._wake = anyio.Event()  # before reading the heap, so no wake-up is missed
            now = self.now()
            due = self.schedule.next_due()
            if due is None or due > now:
                with anyio.move_on_after(math.inf if due is None else due - now):
                    await self._wake.wait()
                continue
            borrower = object()
            await limiter.acquire_on_behalf_of(borrower)
            try:
                await self.gate.quota.acquire(Priority.POLL)
            except QuotaExhausted as exc:
                limiter.release_on_behalf_of(borrower)
                self.fail_all(exc)
                continue
            except BaseException:
                limiter.release_on_behalf_of(borrower)
                raise
            keys = self.schedule.pop_due(self.now(), limit=1)
            run = self.runs.get(keys[0]) if keys else None
            if run is None or run.busy:
                limiter.release_on_behalf_of(borrower)  # the admission is spent: rare, cheap
                continue
            run.busy = True
            tg.start_soon(self._poll, run, borrower)

    def _signal(self) -> None:
        self._wake.set()

    async def _poll(self, run: Tracked, borrower: object) -> None:
        try:
            run.requests += 1
            run.polls += 1
            run.polls_in_phase += 1
            try:
                obs = await run.kind.observe(run.ref, admitted=True)
            finally:
                self.gate.limiter.release_on_behalf_of(borrower)
            run.errors = 0
            await self._route(run, obs)
        except Exception as exc:  # CancelledError is a BaseException and passes through
            self._on_error(run, exc)
        finally:
            run.busy = False
            if run.woken and run.key in self.runs:
                run.woken = False
                self.pacer.poll_at(run, self.now())

    # -- waking ------------------------------------------------------------------------------

    def wake(self, run: Tracked) -> None:
        """Poll this run now (a webhook said it changed); after its in-flight poll if busy."""
        if run.busy:
            run.woken = True
        elif run.key in self.runs:
            self.pacer.poll_at(run, self.now())

    def notify(self, response_id: str) -> bool:
        """Wake the run waiting on ``response_id`` (a webhook said it ended); False if unknown."""
        run = self.pacer.notified(response_id)
        if run is None:
            return False
        self.wake(run)
        return True

    # -- tracking ------------------------------------------------------------------------------

    def track(
        self,
        kind: Kind,
        spec: Any,
        ref: RunRef,
        *,
        learn_key: tuple[str, ...],
        timeout: float | None,
        tag: Any,
        created: float,
    ) -> Tracked:
        """Start tracking a run whose ids are known; it gets a handle and no task."""
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
        )
        run.handle = RunHandle(self, run)
        self.runs[run.key] = run
        self._states[run.state.value] += 1
        self._empty = anyio.Event() if self._empty.is_set() else self._empty
        return run

    async def first(self, run: Tracked, obs: Observation | None) -> None:
        """Route the creation's observation, or poll at once a run attached by id."""
        if obs is None:
            self.pacer.poll_at(run, self.now())
            return
        try:
            await self._route(run, obs)
        except Exception as exc:
            self._on_error(run, exc)

    def ids_changed(self, run: Tracked) -> None:
        """Call the submitter's hook: the run's ids exist now, or moved along a chain."""
        if run.on_ids is not None and run.handle is not None:
            run.on_ids(run.handle)

    def in_flight(self) -> Counter[str]:
        """Count tracked runs by state (kept as states change: a snapshot is O(states))."""
        return +self._states  # a copy without the zeros

    async def drained(self) -> None:
        """Wait until no run is tracked."""
        await self._empty.wait()

    # -- routing -------------------------------------------------------------------------------

    async def _route(self, run: Tracked, obs: Observation) -> None:
        now = self.now()
        if run.polls_in_phase == 1:
            run.first_poll_at = now - run.phase_start
        if obs.state is not run.state or obs.status != run.status:
            # queued -> in_progress does not reset the backoff: it says nothing about when the
            # run will finish, and a reset costs the classic loop a poll or two per run.
            log.debug("run_status", run_id=run.ref.id, status=obs.status, kind=run.kind.name)
        if run.queued_until is None and obs.state is not RunState.QUEUED:
            run.queued_until = now
            self.times.observe_queue(run.learn_key, now - run.phase_start)
        if obs.state is not run.state:
            self._states[run.state.value] -= 1
            self._states[obs.state.value] += 1
        run.state, run.status = obs.state, obs.status
        if obs.state in NEEDS_CLIENT:
            calls = frozenset(c.call_id for c in obs.tool_calls)
            if obs.state is RunState.NEEDS_TOOLS and calls == run.answered:
                # Invariant 4: these outputs went out; the server has not caught up. Wait.
                self.pacer.reschedule(run, now, obs.poll_after)
                return
            run.latency += now - run.seen_working
            if obs.state is not RunState.CANCELLED:
                self.pacer.seen_done(run, now)
            if obs.state is RunState.NEEDS_TOOLS:
                await self._answer(run, obs)
            else:
                await self._finish(run, obs)
            return
        run.seen_working = now
        if run.deadline is not None and now >= run.deadline:
            await self._time_out(run)
            return
        queued_for = now - run.phase_start
        stalled = obs.state is RunState.QUEUED and not run.rounds
        if (
            stalled
            and self.times.is_stalled(run.learn_key, queued_for)
            and await self._stalled(run)
        ):
            return
        self.pacer.reschedule(run, now, obs.poll_after)

    async def _answer(self, run: Tracked, obs: Observation) -> None:
        calls = obs.tool_calls
        if run.spec is None and self.watched_spec is not None and run.kind.name == "responses":
            # A watched chain continues with the response's own model and this fleet's tools.
            run.spec = self.watched_spec(obs.raw)
        try:
            outputs = await self.tools.run_round(calls, run_id=run.ref.id)
        except ToolError as exc:
            await self._cancel_quietly(run)
            self._resolve(run, None, exc)
            return
        try:
            new = await self.retrying(run, lambda: run.kind.answer(run.ref, run.spec, outputs))
        except openai.BadRequestError as exc:
            if run.kind.name == "assistants":
                # Not in requires_action any more (expired, cancelled, or our outputs did
                # arrive before a dropped answer): a poll will tell, and will not resubmit.
                run.answered = frozenset(c.call_id for c in calls)
                log.info("tool_outputs_refused", run_id=run.ref.id, error=exc.message)
                self.pacer.poll_at(run, self.now())
                return
            raise
        # Only now: a submission that failed for good must be answered again on the next poll.
        run.answered = frozenset(c.call_id for c in calls)
        self.pacer.moved_on(obs.raw.id)
        self.ids_changed(run)  # a Responses chain has a new id: tell before anything else
        run.rounds.append(ToolRound(tuple(calls), tuple(outputs)))
        self.stats.tool_rounds += 1
        log.info(
            "run_tools_answered",
            run_id=run.ref.id,
            previous=obs.raw.id,
            calls=len(calls),
            round=len(run.rounds),
        )
        now = self.now()
        run.phase_start = run.seen_working = now
        run.polls_in_phase = run.attempt = 0
        await self._route(run, new)

    async def _finish(self, run: Tracked, obs: Observation) -> None:
        rid = run.ref.id
        state = obs.state
        if state is RunState.COMPLETED or state is RunState.INCOMPLETE:
            run.requests += run.kind.reply_requests
            text = await self.retrying(run, lambda: run.kind.reply(run.ref, obs), count=False)
            result = self._result(run, obs, text)
            if state is RunState.COMPLETED:
                self._resolve(run, result, None)
                return
            error: RunfleetError = RunIncomplete(rid, obs.error_code)
            error.result = result  # type: ignore[attr-defined]
        elif state is RunState.FAILED:
            error = RunFailed(rid, obs.error_code, obs.error_message)
        elif state is RunState.EXPIRED:
            why = "expired before its tool outputs arrived" if run.answered else "expired"
            error = RunExpired(rid, why)
        else:
            error = RunCancelled(rid, run.cancel_reason or "cancelled on the server")
        self._resolve(run, None, error)

    def _figures(self, run: Tracked) -> RunFigures:
        now = self.now()
        started = run.queued_until if run.queued_until is not None else now
        return RunFigures(
            requests=run.requests,
            polls=run.polls,
            queued=started - run.created,
            running=now - started,
            total=now - run.created,
            detection_latency=run.latency,
        )

    def _result(self, run: Tracked, obs: Observation, text: str) -> RunResult:
        figures = self._figures(run)
        return RunResult(
            kind=run.kind.name,  # type: ignore[arg-type]
            id=run.ref.id,
            status=obs.status,
            text=text,
            raw=obs.raw,
            tool_rounds=tuple(run.rounds),
            figures=figures,
            thread_id=run.ref.thread_id,
            response_ids=tuple(run.ref.chain),
            tag=run.tag,
        )

    # -- the ends of a run ---------------------------------------------------------------------

    def _resolve(self, run: Tracked, result: RunResult | None, error: RunfleetError | None) -> None:
        if self.runs.pop(run.key, None) is None:
            return
        self._states[run.state.value] -= 1
        self.pacer.forget(run)
        if isinstance(error, RunError) and error.figures is None:
            error.figures = self._figures(run)
        how = "completed" if error is None else _how(error)
        self.stats.run_finished(how, run.latency if error is None else None)
        log.info(
            "run_finished",
            run_id=run.ref.id,
            kind=run.kind.name,
            outcome=how,
            requests=run.requests,
            polls=run.polls,
            error=None if error is None else str(error),
        )
        assert run.handle is not None
        run.handle._resolve(result, error)
        if not self.runs:
            self._empty.set()

    def end(self, run: Tracked, error: RunfleetError) -> None:
        """End a run with ``error`` (a refused create, a cancelled submission)."""
        self._resolve(run, None, error)

    async def _time_out(self, run: Tracked) -> None:
        assert run.deadline is not None
        await self._cancel_quietly(run)
        self._resolve(run, None, RunTimeout(run.ref.id, run.deadline - run.created))

    async def _stalled(self, run: Tracked) -> bool:
        """Report a stalled run once; by policy cancel and recreate it once. True if restarted."""
        if run.stall_reported:
            return False
        run.stall_reported = True
        queued = self.now() - run.phase_start
        self.stats.stalled += 1
        log.warning("run_stalled", run_id=run.ref.id, queued_for=round(queued, 3))
        if self.on_stall != "recreate" or run.spec is None or run.recreated:
            return False
        await self._cancel_quietly(run)
        self.pacer.restarted(run)
        run.stall_reported = False  # the new run may be reported (not recreated) in turn
        run.recreated = True
        old = run.ref.id
        run.ref = RunRef(chain=[])
        obs = await self.retrying(run, lambda: run.kind.start(run.spec, run.ref))
        self.ids_changed(run)
        now = self.now()
        run.phase_start = run.seen_working = now
        run.polls_in_phase = 0
        log.info("run_recreated", run_id=run.ref.id, replaces=old)
        await self._route(run, obs)
        return True

    async def cancel(self, run: Tracked, reason: str) -> bool:
        """Cancel a run on the server and end it with ``RunCancelled``."""
        if run.key not in self.runs:
            return False
        run.cancel_reason = reason
        self.schedule.cancel(run.key)
        await self._cancel_quietly(run)
        self._resolve(run, None, RunCancelled(run.ref.id, reason))
        return True

    async def _cancel_quietly(self, run: Tracked) -> None:
        """Ask the server to cancel; a failure is logged, the run ends all the same."""
        try:
            run.requests += 1
            await run.kind.cancel(run.ref)
        except openai.APIError as exc:
            log.info("cancel_refused", run_id=run.ref.id, error=str(exc))

    def fail_all(self, error: RunfleetError) -> None:
        """End every run with ``error``; later submissions raise it too."""
        self.broken = error
        for run in list(self.runs.values()):
            self._resolve(run, None, error)

    def detach_all(self, reason: str) -> None:
        """End every run with ``RunDetached`` without touching the server (hand them back)."""
        for run in list(self.runs.values()):
            self._resolve(run, None, RunDetached(run.ref.id, reason))

    async def cancel_all(self, reason: str) -> None:
        """Cancel every run on the server, concurrently, and end each with ``RunCancelled``."""
        async with anyio.create_task_group() as tg:
            for run in list(self.runs.values()):
                tg.start_soon(self.cancel, run, reason)

    # -- errors ---------------------------------------------------------------------------------

    async def retrying(
        self, run: Tracked, call: Callable[[], Awaitable[T]], *, count: bool = True
    ) -> T:
        """Call ``call`` again on 429s, 5xx and network errors, each try through the quota."""
        for attempt in itertools.count():
            if count:
                run.requests += 1
            try:
                return await call()
            except Exception as exc:
                if not _transient(exc) or attempt >= self.max_retries:
                    raise
                log.info("request_retried", run_id=run.ref.id, attempt=attempt + 1, error=str(exc))
                await anyio.sleep(self.retry.next_delay(attempt, self.rng))
        raise AssertionError("unreachable")

    def _on_error(self, run: Tracked, exc: Exception) -> None:
        rid = run.ref.id
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            self.fail_all(AuthError(exc.status_code, self.key_hint, exc.message))
        elif isinstance(exc, openai.NotFoundError):
            self._resolve(run, None, RunNotFound(rid))
        elif isinstance(exc, RunfleetError):
            self._resolve(run, None, exc)
        elif _transient(exc):
            run.errors += 1
            if run.errors > max(10, 2 * self.max_retries):
                error = RunError(rid, f"gave up after {run.errors} failed requests: {exc}")
                self._resolve(run, None, error)
                return
            log.info("poll_failed", run_id=rid, errors=run.errors, error=str(exc))
            now = self.now()
            self.pacer.poll_at(run, now + self.retry.next_delay(run.errors - 1, self.rng))
        elif isinstance(exc, openai.APIStatusError):
            code = str(exc.code or exc.status_code)
            self._resolve(run, None, RunFailed(rid, code, exc.message))
        else:
            log.exception("run_internal_error", run_id=rid)
            self._resolve(run, None, RunError(rid, f"failed inside runfleet: {exc!r}"))


def _how(error: RunfleetError) -> str:
    kinds: list[tuple[type[RunfleetError], str]] = [
        (RunTimeout, "timeout"),
        (RunCancelled, "cancelled"),
        (RunExpired, "expired"),
        (RunIncomplete, "incomplete"),
        (RunNotFound, "not_found"),
        (RunFailed, "failed"),
        (ToolError, "tool_error"),
        (AuthError, "auth"),
        (QuotaExhausted, "quota"),
    ]
    return next((name for cls, name in kinds if isinstance(error, cls)), "error")
