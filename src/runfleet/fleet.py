"""``Fleet``: one object per process that keeps many asynchronous OpenAI runs in flight."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from openai import AsyncOpenAI

from .admission.build import RedisLimits, build_quota
from .admission.gate import RequestGate
from .admission.quota import RequestQuota
from .engine.feeder import Submission, feed
from .engine.handle import RunHandle
from .engine.lifecycle import Engine
from .engine.options import check_fleet_options
from .errors import FleetClosed, RunfleetError, key_hint
from .kinds.assistants import AssistantRunSpec, AssistantsKind
from .kinds.base import Kind, RunRef
from .kinds.responses import ResponsesKind, ResponseSpec
from .logs import get_logger
from .metrics import Metrics, expose, fleet_metrics
from .polling.learning import RunTimes
from .polling.policy import PollPolicy
from .shortcuts import UNSET, Shortcuts
from .stats import FleetStats, StatsCollector
from .tools import OnToolError, ToolRegistry

__all__ = ["Fleet"]

log = get_logger(__name__)
Spec = ResponseSpec | AssistantRunSpec


class Fleet(Shortcuts):
    """Keep many background responses and Assistants runs in flight through one poll loop.

    Every request passes one :class:`~runfleet.admission.quota.RequestQuota`, so the account's
    requests per minute stay under ``rpm`` however many runs are waiting; idle runs cost a
    heap entry, not a task. Tool calls are answered by the registered tools, once per round.

    The client is copied with ``max_retries=0``: the SDK's own retries would go around the
    quota, and they repeat POSTs without an idempotency key. The fleet retries instead,
    through the quota.

    Example::

        async with Fleet(AsyncOpenAI(), rpm=3000, tools=[get_weather]) as fleet:
            result = await fleet.respond(model="gpt-5-mini", input="Weather in Oslo?")
            print(result.text, result.figures.polls)

    Args:
        client: the SDK client; its key is read when it is created.
        rpm: requests per minute never to exceed in any 60 s window.
        tpm: tokens per minute never to exceed in any 60 s window. Creates and tool outputs
            reserve their estimated tokens (text / 4 plus ``max_output_tokens``, or 1,000)
            and give back what their run's ``usage`` did not use; polls cost none and never
            wait for tokens. None (the default) learns the limit from the server's
            ``x-ratelimit-limit-tokens``.
        burst: requests that may go at once (default: one second's share of ``rpm``).
        per_second: requests in any one second, for servers that enforce it (default: learned).
        tools: tool handlers (``@tool`` functions or plain functions).
        concurrency: requests in flight at once; keep it at or under the HTTP client's
            keep-alive pool (100 for the SDK's default client).
        policy: how polls are spaced (learning, latency target, stall detection).
        timeout: default total wait per run, after which it is cancelled on the server;
            None (the default): as long as the run lives, or 1.25 times a 2h/8h window.
        on_exit: at the end of ``async with``: ``"wait"`` for every run, ``"cancel"`` them on
            the server, or ``"detach"`` (leave them running and end their handles).
        on_stall: a run stuck in ``queued`` is ``"report"``-ed, or cancelled and
            ``"recreate"``-d once.
        on_ambiguous_create: a create that may have been applied though no readable answer
            came (the connection broke after sending, a timeout, an unreadable body) is sent
            again with the run's ``figures.recreated`` saying why (``"retry"``: a second copy
            may run, paid for), or ends the run with ``AmbiguousCreate`` (``"fail"``). OpenAI
            honours no idempotency key, so the fleet cannot tell; each try carries its own
            nonce in ``metadata["runfleet_try"]`` (when the user's metadata has room).
        tool_errors: a failing tool call becomes an error output the model reads
            (``"reply"``) or fails the run (``"fail"``).
        tool_timeout: default seconds per tool call.
        quota, redis, account: share a quota between fleets (default: a new one of ``rpm``), or
            ``account``'s limits between processes through Redis (a URL, or a ``RedisLimits``
            that says what a failing Redis does); ``account`` defaults to a hash of the key.
        max_retries: tries per create, submit or fetch on 429, 5xx and network errors.
        seed: seeds the jitter, for reproducible benchmarks.
        webhooks: Responses runs are woken by webhook events (see
            :class:`~runfleet.webhooks.WebhookReceiver`) and otherwise polled only every
            ``safety_poll`` seconds (±20 %), so a lost event costs latency, never the run.
            Assistants runs have no events and keep the normal schedule.
        safety_poll: seconds between safety-net polls of a run covered by webhooks.
        metrics: expose this fleet to Prometheus (True: the default registry, or a registry).
        completion_window: the window of responses whose spec names none (``"2h"``/``"8h"``:
            30 % / 40 % off, runs wait up to that long; None: ``soonest``).

    Raises:
        ValueError: ``rpm``, ``tpm``, ``burst``, ``concurrency``, ``safety_poll`` or
            ``completion_window`` out of range, or a client without a key.
    """

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        rpm: float,
        tpm: float | None = None,
        burst: float | None = None,
        per_second: float | None = None,
        tools: Iterable[Any] = (),
        concurrency: int = 64,
        policy: PollPolicy | None = None,
        timeout: float | None = None,
        on_exit: Literal["wait", "cancel", "detach"] = "wait",
        on_stall: Literal["report", "recreate"] = "report",
        on_ambiguous_create: Literal["retry", "fail"] = "retry",
        tool_errors: OnToolError = "reply",
        tool_timeout: float = 60.0,
        quota: RequestQuota | None = None,
        max_retries: int = 5,
        seed: int | None = None,
        webhooks: bool = False,
        safety_poll: float = 60.0,
        metrics: Metrics = False,
        redis: str | RedisLimits | None = None,
        account: str | None = None,
        completion_window: Literal["soonest", "2h", "8h"] | None = None,
    ) -> None:
        check_fleet_options(
            client=client,
            rpm=rpm,
            tpm=tpm,
            timeout=timeout,
            safety_poll=safety_poll,
            on_exit=on_exit,
            on_ambiguous_create=on_ambiguous_create,
            shared_quota=quota is not None,
            completion_window=completion_window,
            per_second=per_second,
        )
        self._client = client.with_options(max_retries=0)
        self._quota = build_quota(
            quota, rpm, burst, tpm, redis, account, client.api_key, per_second
        )
        self._stats = StatsCollector()
        gate = RequestGate(self._quota, self._stats, concurrency=concurrency)
        self._kinds: dict[str, Kind] = {
            "responses": ResponsesKind(self._client, gate, completion_window),
            "assistants": AssistantsKind(self._client, gate),
        }
        self._engine = Engine(
            gate=gate,
            tools=ToolRegistry(
                tools, timeout=tool_timeout, on_error=tool_errors, on_block=self._stats.tool_blocked
            ),
            times=RunTimes(policy),
            stats=self._stats,
            rng=random.Random(seed),
            key_hint=key_hint(client.api_key),
            on_stall=on_stall,
            max_retries=max_retries,
            safety_poll=safety_poll if webhooks else None,
            on_ambiguous_create=on_ambiguous_create,
        )
        self._timeout = timeout
        self._on_exit = on_exit
        self._tg: TaskGroup | None = None
        self._closing = False
        expose(fleet_metrics(self.stats), metrics)

    def __repr__(self) -> str:
        state = "open" if self._tg is not None and not self._closing else "closed"
        nxt = self._engine.next_poll()
        poll = f"{nxt:.2f}s" if nxt is not None else "-"
        q = self._quota.stats()
        return (
            f"<Fleet {state} in_flight={self._engine.in_flight().total()} next_poll_in={poll} "
            f"rpm={self._stats.last_minute(self._engine.now())}"
            f"/{q.effective_rpm:g} loop_lag_max={self._stats.lag_max:.2f}s>"
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Fleet:
        if self._tg is not None:
            raise RuntimeError("a Fleet can be entered once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._engine.loop, tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._closing = True
        try:
            await self._engine.drain(
                timeout=None if exc is None and self._on_exit == "wait" else 0,
                then="cancel" if self._on_exit == "cancel" else "detach",
                reason="fleet closed" if exc is None else f"fleet closed by {type(exc).__name__}",
            )
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            await self._quota.aclose()
        return None

    async def drain(
        self,
        *,
        timeout: float | None,  # noqa: ASYNC109 - a bound on the wait, then what ``then`` says
        then: Literal["detach", "cancel"] = "detach",
    ) -> int:
        """Start nothing new, wait up to ``timeout`` s for runs in flight, then end the rest.

        For a service's shutdown hook (SIGTERM): ``submit``, ``watch`` and ``map`` now raise
        :class:`FleetClosed`; runs left at the timeout are handed back (``"detach"``: they end
        with ``RunDetached``, ids good for ``watch``) or cancelled; return how many were left.
        """
        if self._tg is None:
            raise FleetClosed("the fleet is not running: use it inside `async with Fleet(...)`")
        drained = self._engine.drain(timeout=timeout, then=then, reason="fleet drained")
        self._closing = True  # once the arguments have passed: a misuse closes nothing
        return await drained

    def _check_open(self) -> None:
        if self._tg is None or self._closing:
            raise FleetClosed("the fleet is not running (not yet entered, drained, or closed)")
        if self._engine.broken is not None:
            raise self._engine.broken

    # -- starting runs -------------------------------------------------------------------------

    async def submit(
        self,
        spec: Spec,
        *,
        timeout: float | None = UNSET,  # noqa: ASYNC109 - the run's deadline, not this call's
        tag: Any = None,
        on_ids: Callable[[RunHandle], None] | None = None,
    ) -> RunHandle:
        """Start a run now (its create request passes the quota); return its handle.

        ``on_ids(handle)`` is called as soon as the run's ids exist and each time a Responses
        chain moves to a new id, before anything else happens to the run (to journal them);
        also just before a chain's next response is created (``handle.creating``).

        Raises:
            RunRejected: the server refused the create request (4xx).
            AuthError: the server refused the key.
            FleetClosed: the fleet is not running.
        """
        handle, refused = await self._start(spec, timeout, tag, on_ids)
        if refused is not None:
            raise refused
        return handle

    async def _start(
        self,
        spec: Spec,
        timeout: float | None,  # noqa: ASYNC109 - the run's deadline, not this call's
        tag: Any,
        on_ids: Callable[[RunHandle], None] | None = None,
    ) -> tuple[RunHandle, RunfleetError | None]:
        """Create and track a run; a refused create ends its handle with the error."""
        self._check_open()
        kind = self._kinds.get(getattr(spec, "kind", ""))
        if kind is None:
            raise TypeError(
                f"expected a ResponseSpec or AssistantRunSpec, not {type(spec).__name__}"
            )
        deadline = self._timeout if timeout is UNSET else timeout
        return await self._engine.start(kind, spec, timeout=deadline, tag=tag, on_ids=on_ids)

    def watch(
        self,
        *,
        response_id: str | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        timeout: float | None = UNSET,
        tag: Any = None,
        spec: Spec | None = None,
        on_ids: Callable[[RunHandle], None] | None = None,
    ) -> RunHandle:
        """Follow a run created elsewhere; ``await fleet.watch(response_id=...)`` waits for it.

        Its tool calls are answered by this fleet's tools like any other run's. A Responses
        chain continues with ``spec``'s model, instructions and tools when given, else with
        the watched response's model and this fleet's tools. ``on_ids`` as for :meth:`submit`.
        """
        self._check_open()
        if response_id and not (thread_id or run_id):
            kind, ref = self._kinds["responses"], RunRef(response_id, None, [response_id])
        elif thread_id and run_id and not response_id:
            kind, ref = self._kinds["assistants"], RunRef(run_id, thread_id, [])
        else:
            raise ValueError("watch() takes response_id, or thread_id and run_id")
        deadline = self._timeout if timeout is UNSET else timeout
        return self._engine.attach(kind, ref, spec=spec, timeout=deadline, tag=tag, on_ids=on_ids)

    async def map(
        self,
        items: Iterable[Spec | Submission] | AsyncIterable[Spec | Submission],
        *,
        max_in_flight: int = 100,
    ) -> AsyncGenerator[RunHandle, None]:
        """Start many runs, at most ``max_in_flight`` at once; yield each handle as it ends.

        Each yielded handle is done: ``await handle`` returns at once (or raises its error).
        A plain spec's ``handle.tag`` is its position in ``items``; a :class:`Submission`
        sets its own tag and ``on_ids``, or names a run to attach to instead of creating one.
        A spec the server refuses yields a handle that raises :class:`RunRejected`. The next
        item is pulled only once a slot is free, so a generator is never ahead of the runs.

        Raises:
            ValueError: ``max_in_flight`` is below 1.
            TypeError: an item is neither a spec nor a ``Submission``.
        """
        self._check_open()
        assert self._tg is not None
        async with contextlib.aclosing(
            feed(items, self._open, self._tg, max_in_flight=max_in_flight)
        ) as ended:
            async for handle in ended:
                yield handle

    async def _open(self, submission: Submission) -> RunHandle:
        """Open one submission of :meth:`map`: attach to the run it names, or create it."""
        if submission.attaches:
            return self.watch(
                response_id=submission.response_id,
                thread_id=submission.thread_id,
                run_id=submission.run_id,
                tag=submission.tag,
                spec=submission.spec,
                on_ids=submission.on_ids,
            )
        assert submission.spec is not None
        handle, _ = await self._start(submission.spec, UNSET, submission.tag, submission.on_ids)
        return handle

    def tool_definitions(
        self, kind: Literal["responses", "assistants"]
    ) -> tuple[dict[str, Any], ...]:
        """Return this fleet's tools in the wire shape of ``kind`` (e.g. for an assistant's run)."""
        return tuple(dict(t) for t in self._engine.definitions(kind))

    def wake(self, response_id: str) -> bool:
        """Poll the run now waiting on ``response_id`` at once (a webhook said it ended).

        Returns False if no run of this fleet waits on that response; an event that arrives
        before its create returned is remembered, and the run is polled as soon as it waits.
        """
        return self._engine.notify(response_id)

    def on_waiting(self, hook: Callable[[str, bool], None] | None) -> bool:
        """Tell ``hook(response_id, waiting)`` as runs start/stop waiting (a webhook relay);
        return False if it never will (``webhooks=False``)."""
        return self._engine.on_waiting(hook)

    @property
    def client(self) -> AsyncOpenAI:
        """The fleet's copy of the client (SDK retries off)."""
        return self._client

    # -- figures -------------------------------------------------------------------------------

    def stats(self) -> FleetStats:
        """Return a snapshot of requests, runs and latency so far."""
        quota = self._quota.stats()
        return self._stats.snapshot(
            self._engine.now(), self._engine.in_flight(), quota, quota.tokens
        )

    @property
    def quota(self) -> RequestQuota:
        """The quota every request of this fleet passes."""
        return self._quota
