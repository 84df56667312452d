"""What an observation means for its run: poll again later, answer its tools, or end it.

Each look at a run — a poll, a create's or an answer's response — is routed here: a run still
working is rescheduled (or timed out, or reported stalled and by policy recreated once); a
run that asks for tools gets one round answered, at most once (invariant 4); a finished run
has its reply fetched and is resolved; a failed request ends the run, every run, or nothing,
by :mod:`runfleet.engine.failures`' policy.
"""

from __future__ import annotations

from typing import Any, Literal

import anyio
import openai

from ..errors import (
    RunCancelled,
    RunError,
    RunExpired,
    RunFailed,
    RunfleetError,
    RunIncomplete,
    RunTimeout,
    ToolError,
    UnreadableBody,
)
from ..kinds.base import NEEDS_CLIENT, Observation, RunRef, RunState
from ..logs import get_logger
from ..polling.learning import RunTimes
from ..polling.pacing import Pacer
from ..results import RunResult, ToolRound
from ..stats import StatsCollector
from ..tools import ToolRegistry
from .creates import Creator
from .failures import Retrier, auth_error, poll_error
from .run import Tracked
from .table import RunTable

__all__ = ["Router"]

log = get_logger(__name__)


class Router:
    """Route observations of the engine's runs; end runs through the run table.

    Args:
        runs: the engine's tracked runs.
        pacer: places each run's next poll.
        times: what is learned of run times per key.
        tools: answers tool calls.
        definitions: the fleet's tool definitions by kind name.
        stats: where tool rounds and stalls are counted.
        retrier: sends a request again on transient errors.
        key_hint: the API key's last characters, for the error of a refused key.
        on_stall: a stalled run is ``"report"``-ed, or cancelled and ``"recreate"``-d once.
        creator: sends a recreated run's create.
        max_errors: consecutive failed polls after which a run is given up.
    """

    def __init__(
        self,
        *,
        runs: RunTable,
        pacer: Pacer[Tracked],
        times: RunTimes[tuple[str, ...]],
        tools: ToolRegistry,
        definitions: dict[str, tuple[dict[str, Any], ...]],
        stats: StatsCollector,
        retrier: Retrier,
        key_hint: str,
        on_stall: Literal["report", "recreate"],
        creator: Creator,
        max_errors: int,
    ) -> None:
        self._creator = creator
        self._runs = runs
        self._pacer = pacer
        self._times = times
        self._tools = tools
        self._definitions = definitions
        self._stats = stats
        self._retrier = retrier
        self._key_hint = key_hint
        self._on_stall = on_stall
        self._max_errors = max_errors

    async def route(self, run: Tracked, obs: Observation) -> None:
        """Act on what a poll (or a create, or an answer) saw of ``run``."""
        now = anyio.current_time()
        if run.polls_in_phase == 1:
            run.first_poll_at = now - run.phase_start
        if obs.state is not run.state or obs.status != run.status:
            # queued -> in_progress does not reset the backoff: it says nothing about when the
            # run will finish, and a reset costs the classic loop a poll or two per run.
            log.debug("run_status", run_id=run.ref.id, status=obs.status, kind=run.kind.name)
        if run.queued_until is None and obs.state is not RunState.QUEUED:
            run.queued_until = now
            self._times.observe_queue(run.learn_key, now - run.phase_start)
        self._runs.moved(run, obs.state)
        run.status = obs.status
        if obs.state in NEEDS_CLIENT:
            calls = frozenset(c.call_id for c in obs.tool_calls)
            if obs.state is RunState.NEEDS_TOOLS and calls == run.answered:
                # Invariant 4: these outputs went out; the server has not caught up. Wait.
                self._pacer.reschedule(run, now, obs.poll_after)
                return
            run.latency += now - run.seen_working
            if obs.state is not RunState.CANCELLED:
                self._pacer.seen_done(run, now)
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
            and self._times.is_stalled(run.learn_key, queued_for)
            and await self._stalled(run)
        ):
            return
        self._pacer.reschedule(run, now, obs.poll_after)

    async def _answer(self, run: Tracked, obs: Observation) -> None:
        calls = obs.tool_calls
        kind = run.kind
        if run.spec is None:
            run.spec = kind.continuation(obs.raw, self._definitions[kind.name])
        try:
            outputs = await self._tools.run_round(calls, run_id=run.ref.id)
        except ToolError as exc:
            await self.cancel_quietly(run)
            self.end(run, None, exc)
            return
        if kind.answer_creates:
            # A new response: sent like a first create (each try marked, an ambiguous one
            # counted and the run marked recreated), its intent told to the submitter first.
            run.creating = True
            run.ids_changed()
            try:
                new = await self._creator.send(
                    run, run.spec, lambda spec: kind.answer(run.ref, spec, outputs)
                )
            finally:
                run.creating = False
        else:
            new = await self.retrying(run, lambda: kind.answer(run.ref, run.spec, outputs))
        # Only now: a submission that failed for good must be answered again on the next poll.
        run.answered = frozenset(c.call_id for c in calls)
        if new is None:  # the server no longer waits for them: a poll tells what happened
            self._pacer.poll_at(run, anyio.current_time())
            return
        self._pacer.moved_on(obs.raw.id)
        run.ids_changed()  # a Responses chain has a new id: tell before anything else
        run.rounds.append(ToolRound(tuple(calls), tuple(outputs)))
        self._stats.tool_rounds += 1
        log.info(
            "run_tools_answered",
            run_id=run.ref.id,
            previous=obs.raw.id,
            calls=len(calls),
            round=len(run.rounds),
        )
        run.phase_start = run.seen_working = anyio.current_time()
        run.polls_in_phase = run.attempt = 0
        await self.route(run, new)

    async def _finish(self, run: Tracked, obs: Observation) -> None:
        rid = run.ref.id
        state = obs.state
        if state is RunState.COMPLETED or state is RunState.INCOMPLETE:
            kind = run.kind
            run.requests += kind.reply_requests
            text = await self._retrier.call(
                lambda: kind.reply(run.ref, obs), run_id=lambda: run.ref.id
            )
            result = run.result_of(obs, text, anyio.current_time())
            if state is RunState.COMPLETED:
                self.end(run, result, None)
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
        self.end(run, None, error)

    # -- deadlines and stalls ------------------------------------------------------------------

    async def _time_out(self, run: Tracked) -> None:
        assert run.deadline is not None
        await self.cancel_quietly(run)
        self.end(run, None, RunTimeout(run.ref.id, run.deadline - run.created))

    async def _stalled(self, run: Tracked) -> bool:
        """Report a stalled run once; by policy cancel and recreate it once. True if restarted."""
        if run.stall_reported:
            return False
        run.stall_reported = True
        queued = anyio.current_time() - run.phase_start
        self._stats.stalled += 1
        log.warning("run_stalled", run_id=run.ref.id, queued_for=round(queued, 3))
        if self._on_stall != "recreate" or run.spec is None or run.recreated:
            return False
        await self.cancel_quietly(run)
        self._pacer.restarted(run)
        run.stall_reported = False  # the new run may be reported (not recreated) in turn
        run.recreated = True
        run.recreated_why = run.recreated_why or "stalled"
        old = run.ref.id
        run.ref = RunRef(chain=[])
        obs = await self._creator.create(run, run.spec)
        run.ids_changed()
        run.phase_start = run.seen_working = anyio.current_time()
        run.polls_in_phase = 0
        log.info("run_recreated", run_id=run.ref.id, replaces=old)
        await self.route(run, obs)
        return True

    def end(self, run: Tracked, result: RunResult | None, error: RunfleetError | None) -> None:
        """End ``run`` once (see :class:`~runfleet.engine.table.RunTable`)."""
        self._runs.end(run, anyio.current_time(), result, error)

    async def cancel_quietly(self, run: Tracked) -> None:
        """Ask the server to cancel; a failure is logged, the run ends all the same."""
        try:
            run.requests += 1
            await run.kind.cancel(run.ref)
        except (openai.APIError, UnreadableBody) as exc:
            log.info("cancel_refused", run_id=run.ref.id, error=str(exc))

    async def retrying(self, run: Tracked, call: Any) -> Any:
        """Return ``call()``, tried again on transient errors; each try counts as a request."""

        def count() -> None:
            run.requests += 1

        return await self._retrier.call(call, run_id=lambda: run.ref.id, on_try=count)

    def failed(self, run: Tracked, exc: Exception) -> None:
        """End ``run``, every run (a refused key), or poll it again later, as ``exc`` means."""
        auth = auth_error(exc, self._key_hint)
        if auth is not None:
            self._runs.fail_all(auth, anyio.current_time())
            return
        error = poll_error(run.ref.id, exc)
        if error is not None:
            self.end(run, None, error)
            return
        run.errors += 1
        if run.errors > self._max_errors:
            error = RunError(run.ref.id, f"gave up after {run.errors} failed requests: {exc}")
            self.end(run, None, error)
            return
        log.info("poll_failed", run_id=run.ref.id, errors=run.errors, error=str(exc))
        self._pacer.poll_at(run, anyio.current_time() + self._retrier.delay(run.errors))
