"""One session of ``runfleet batch``: what to start, in which order, and what each end writes.

The session owns the order of events per item, which is the point of this module:

1. the journal says ``submitting`` right before the item is handed to the fleet's feeder
   (:meth:`runfleet.Fleet.map`), which takes a slot *before* it asks for the next item: an
   item journaled as submitting is being created, never waiting for a slot;
2. the run's ids go to the journal in the ``on_ids`` hook, as soon as they exist and before
   the fleet does anything else with the run; a Responses chain moves to a new id on each
   tool round, and the hook journals the new id before the new response is polled;
3. when the run ends, its output line goes to the journal first, then to the output file,
   so a stop between the two writes the line on resume, never twice.

A resumed batch skips ``done`` items, attaches to ``running`` ones by id (no new create),
and starts the rest. A run the server no longer knows (a background response is kept about
10 minutes) is recreated once and its line says ``"recreated": true``. Ctrl-C (or SIGTERM)
once: nothing new starts and runs in flight get ``--grace`` seconds; twice: stop now, every
id journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
from openai import AsyncOpenAI

from ..admission.build import RedisLimits
from ..engine.feeder import Submission
from ..engine.handle import RunHandle
from ..errors import AuthError, RunDetached, RunNotFound
from ..fleet import Fleet
from ..logs import get_logger
from ..metrics import Metrics
from ..polling.policy import PollPolicy
from ..stats import FleetStats
from .config import BatchConfig, BatchError
from .files import InputFile, OutputFile, written_ids
from .journal import Journal, JournalEntry
from .progress import ProgressState, ProgressView, progress_view
from .records import BatchItem, OutputLine
from .report import BatchSummary, Tally, classic_requests, invalid_report
from .specs import item_spec, item_window

__all__ = ["BatchSession"]

log = get_logger(__name__)
_TICK = 0.25
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Why an item is created again on resume: the last session stopped (kill -9, a crash) while
# its create, or its tool round's new response, was on the wire. It may exist already.
MID_CREATE = "stopped while creating"
MID_ROUND = "stopped while answering tools"
_RESTARTED = (
    'items stopped while a create was on the wire; each is created again and marked "recreated":'
    " true (a first copy may exist on the server, paid for)"
)


@dataclass(slots=True)
class _Flight:
    """An item handed to the fleet and not yet written."""

    item: BatchItem
    recreated: str | None  # why it may exist twice on the server (first reason), or None
    resumed: bool
    run_id: str | None = None  # the id last journaled; None while its create is on the wire
    lost_once: bool = False  # its run was gone from the server once and recreated


class BatchSession:
    """One session: the items to start, the ends of their runs, the ticker and Ctrl-C."""

    def __init__(
        self,
        cfg: BatchConfig,
        source: InputFile,
        journal: Journal,
        out: OutputFile,
        rpm: float,
        *,
        metrics: Metrics = False,
        shared: RedisLimits | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.journal = journal
        self.out = out
        self.rpm = rpm
        self.shared = shared  # --redis: the account's limits, shared with other processes
        self.scale = cfg.sim_time_scale
        self.tally = Tally(total=len(source.items) + len(source.invalid))
        self.todo: deque[BatchItem] = deque()
        self.restarted: dict[str, str] = {}  # item id -> why it may exist already
        self.attach: deque[tuple[BatchItem, JournalEntry]] = deque()
        self.lost: deque[tuple[_Flight, RunNotFound]] = deque()  # to recreate, once each
        self.in_flight: dict[str, _Flight] = {}
        self.assistant_tools: tuple[dict[str, Any], ...] = ()
        self.stopping = anyio.Event()
        self.changed = anyio.Event()  # an item ended or Ctrl-C: the items may have more to say
        self.stop_now = anyio.CancelScope()
        self.interrupts = 0
        self.stopped_by: str | None = None  # the signal that stopped it: SIGINT or SIGTERM
        self.grace_ends: float | None = None  # when runs in flight are handed back, once stopping
        self.invalid = source.invalid
        self._prepare(source)

    # -- what was done before ------------------------------------------------------------------

    def _prepare(self, source: InputFile) -> None:
        """Split the input into done, re-attachable and new items; repair the output file."""
        entries = self.journal.entries()
        resuming = bool(entries)
        if not resuming:
            self.out.truncate()  # a new batch: an output without a journal is not ours to keep
        have = written_ids(self.cfg.out) if resuming else set()
        for entry in entries.values():
            record = entry.output
            if entry.state != "done" or record is None:
                continue
            if (record.id, record.line) not in have:
                self.out.write(record)  # recorded, not yet written when it stopped
        for bad in source.invalid:
            record = bad.output()
            key = f"#line{bad.line}"  # an invalid line's id may be another item's (duplicates)
            known = entries.get(key)
            if known is not None and known.state == "done":
                self._before(known)
                continue
            self.journal.finished(key, record)
            self.out.write(record)
            self.tally.add(record)
        for item in source.items:
            found = entries.get(item.id)
            if found is not None and found.state == "done":
                self._before(found)
            elif found is not None and found.attachable:
                if found.answering and found.kind == "responses" and found.recreated is None:
                    # Its tool round will be answered again: the first answer may exist.
                    self._restart(item.id, MID_ROUND)
                self.attach.append((item, found))
            else:
                if found is not None and found.state == "submitting":
                    self._restart(item.id, found.recreated or MID_CREATE)
                self.todo.append(item)
        if n := len(self.restarted):
            print(f"runfleet batch: {n} {_RESTARTED}", file=sys.stderr)

    def _restart(self, item_id: str, why: str) -> None:
        """Mark an item that may exist twice once this session creates it again: journaled
        before anything is sent, so another crash keeps the mark."""
        log.info("batch_item_restarted", item=item_id, why=why)
        self.journal.recreated(item_id, why)
        self.restarted[item_id] = why

    def _before(self, entry: JournalEntry) -> None:
        """Count an item an earlier session finished: the summary is the whole file's."""
        if entry.output is not None:  # always there: "done" is written with its line
            self.tally.add_before(entry.output)

    # -- the session ---------------------------------------------------------------------------

    async def run(self, client: AsyncOpenAI) -> BatchSummary:
        """Run the batch to its end, or to its interruption; return its summary."""
        cfg = self.cfg
        policy, burst = None, None
        if self.scale != 1.0:
            # The simulator's time is scaled: so are its windows (a per-second limit becomes
            # per 0.1 s at 0.1) and the run times the classic schedule was made for.
            policy = PollPolicy().scaled(self.scale)
            burst = max(1.0, self.rpm / 60 * self.scale)
        for line in invalid_report(self.invalid, str(cfg.out)):
            print(line, file=sys.stderr)
        view = progress_view(cfg.progress, every=cfg.progress_every)
        start = anyio.current_time()
        stats = None
        with self._signals():
            with self.stop_now:
                async with Fleet(
                    client, rpm=self.rpm, tpm=cfg.tpm, burst=burst, tools=cfg.tools,
                    timeout=cfg.timeout, metrics=self.metrics,
                    policy=policy,
                    on_exit="detach", redis=self.shared,
                ) as fleet:  # fmt: skip
                    self.fleet = fleet
                    if cfg.assistant:  # an assistant's run takes the fleet's tools as they are
                        self.assistant_tools = fleet.tool_definitions("assistants")
                    try:
                        await self._work(view, start)
                    finally:
                        stats = fleet.stats()
        if view is not None:
            view.update(self._state(stats, start))
            view.close()
        return BatchSummary(
            tally=self.tally,
            stats=stats,
            quota_rpm=self.rpm,
            wall=anyio.current_time() - start,
            handed_back=sum(1 for f in self.in_flight.values() if f.run_id is not None),
            not_started=len(self.todo),
            interrupted=self.interrupts > 0,
            stopped_by=self.stopped_by,
            journal=str(self.cfg.journal_path),
            time_scale=self.scale,
        )

    async def _work(self, view: ProgressView | None, start: float) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick, view, start)
            with anyio.CancelScope() as consuming:
                tg.start_soon(self._grace, consuming)
                ended = self.fleet.map(self._items(), max_in_flight=self.cfg.max_in_flight)
                async with contextlib.aclosing(ended):
                    async for handle in ended:
                        await self._ended(handle)
            tg.cancel_scope.cancel()

    async def _grace(self, consuming: anyio.CancelScope) -> None:
        """After the first Ctrl-C, give the runs in flight ``--grace`` s, then hand them back."""
        await self.stopping.wait()
        self.grace_ends = anyio.current_time() + self.cfg.grace
        await anyio.sleep(self.cfg.grace)
        consuming.cancel()

    # -- what to start -------------------------------------------------------------------------

    async def _items(self) -> AsyncIterator[Submission]:
        """Yield what the fleet starts next, until nothing is left to start or to wait for.

        Runs to attach come first, then lost runs to recreate, then new items. With nothing to
        yield and runs in flight, it waits: one of them may be lost and need recreating.
        """
        while not self.stopping.is_set():
            if self.attach:
                yield self._attached(*self.attach.popleft())
            elif self.lost:
                flight, error = self.lost.popleft()
                log.warning("batch_item_recreated", item=flight.item.id, gone=error.run_id)
                self.journal.recreated(flight.item.id)
                flight.recreated = flight.recreated or "gone from the server"
                flight.lost_once = True
                yield self._created(flight)
            elif self.todo:
                item = self.todo.popleft()
                yield self._created(_Flight(item, self.restarted.get(item.id), resumed=False))
            elif self.in_flight:
                self.changed = anyio.Event()
                await self.changed.wait()
            else:
                return
        while self.lost:  # stopped before recreating them: reported lost, as they were
            flight, error = self.lost.popleft()
            item, kind, resumed = flight.item, self.cfg.kind, flight.resumed
            line = OutputLine.of_error(
                item, kind, error, recreated=flight.recreated, resumed=resumed
            )
            self._write(flight, line)

    def _attached(self, item: BatchItem, entry: JournalEntry) -> Submission:
        """Re-attach to a run that exists on the server: no new create, no new cost."""
        responses = entry.kind == "responses"
        run_id = entry.response_id if responses else entry.run_id
        why = self.restarted.get(item.id, entry.recreated)
        flight = _Flight(item, why, resumed=True, run_id=run_id)
        self.in_flight[item.id] = flight
        return Submission(
            # A response that asks for tools continues with the item's model and tools.
            item_spec(item, self.cfg, self.journal, self.assistant_tools) if responses else None,
            tag=item.id,
            on_ids=self._ids_hook(flight),
            response_id=entry.response_id if responses else None,
            thread_id=None if responses else entry.thread_id,
            run_id=None if responses else entry.run_id,
        )

    def _created(self, flight: _Flight) -> Submission:
        """Journal the intent, then hand the item over: the feeder opens it at once."""
        item = flight.item
        self.journal.submitting(item.id, item.line, self.cfg.kind)
        flight.run_id = None  # a recreated run's ids are journaled afresh (state "running")
        self.in_flight[item.id] = flight
        return Submission(
            item_spec(item, self.cfg, self.journal, self.assistant_tools),
            tag=item.id,
            on_ids=self._ids_hook(flight),
        )

    def _ids_hook(self, flight: _Flight) -> Callable[[RunHandle], None]:
        """Journal a run's ids the moment they exist, and each new id of a Responses chain."""

        def journal_ids(handle: RunHandle) -> None:
            item_id = flight.item.id
            if handle.creating:  # a tool round's new response is about to be sent
                self.journal.answering(item_id)
                return
            # An ambiguous create sent again: the mark goes in with the ids, in one write.
            why = None if flight.recreated else handle.recreated
            flight.recreated = flight.recreated or why
            if flight.run_id is None:
                if handle.kind == "responses":
                    self.journal.started(item_id, response_id=handle.id, recreated=why)
                else:
                    self.journal.started(
                        item_id, thread_id=handle.thread_id, run_id=handle.id, recreated=why
                    )
            elif handle.id != flight.run_id:
                self.journal.moved({item_id: handle.id}, recreated=why)
            flight.run_id = handle.id

        return journal_ids

    # -- ends of runs --------------------------------------------------------------------------

    async def _ended(self, handle: RunHandle) -> None:
        flight = self.in_flight.get(str(handle.tag))
        error = handle.exception()
        if isinstance(error, AuthError):
            # Not the item's fault: leave it unfinished in the journal and stop the batch.
            raise BatchError(f"the server refused the API key: {error}")
        if flight is None or isinstance(error, RunDetached):
            return  # stays "running" in the journal: the next session re-attaches it
        item = flight.item
        if isinstance(error, RunNotFound) and not flight.lost_once and not self.stopping.is_set():
            # A background response is kept about 10 minutes: it aged out. Once, and said so.
            self.lost.append((flight, error))
        elif error is None:
            result = await handle
            record = OutputLine.of_result(
                item, result, recreated=flight.recreated, resumed=flight.resumed,
                window=item_window(item, self.cfg),
            )  # fmt: skip
            self._write(flight, record, classic_requests(result, self.scale))
        else:
            record = OutputLine.of_error(
                item, handle.kind, error, recreated=flight.recreated, resumed=flight.resumed,
                window=item_window(item, self.cfg),
            )  # fmt: skip
            self._write(flight, record)
        self.changed.set()

    def _write(self, flight: _Flight, record: OutputLine, classic: int | None = None) -> None:
        """Journal the line, then append it: a stop in between rewrites it on resume."""
        del self.in_flight[flight.item.id]
        self.journal.finished(record.id, record)
        self.out.write(record)
        self.tally.add(record, classic)

    # -- ticking -------------------------------------------------------------------------------

    async def _tick(self, view: ProgressView | None, start: float) -> None:
        if view is None:
            return  # the summary's peaks are the fleet's own, not sampled here
        while True:
            view.update(self._state(self.fleet.stats(), start))
            await anyio.sleep(_TICK)

    def _state(self, stats: FleetStats | None, start: float) -> ProgressState:
        now = anyio.current_time()
        return ProgressState(
            total=self.tally.total,
            done=self.tally.done,
            in_flight=len(self.in_flight),
            failed=self.tally.failed,
            invalid=self.tally.invalid,
            rpm=stats.requests_last_minute if stats else 0,
            quota=stats.quota.effective_rpm if stats and stats.quota else self.rpm,
            elapsed=now - start,
            ended=self.tally.ended,
            grace_left=None if self.grace_ends is None else self.grace_ends - now,
            tpm=round(stats.tokens.used_last_minute) if stats and stats.tokens else 0,
            token_limit=stats.token_limit if stats else None,
        )

    # -- Ctrl-C and SIGTERM ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """First SIGINT or SIGTERM: start nothing new, let in-flight runs finish. Second: now.

        SIGTERM is what a container runtime or systemd sends before SIGKILL: without this it
        would end the process at once, creates on the wire included (as ``kill -9`` does).
        """
        loop = asyncio.get_running_loop()
        installed = []
        for sig in _STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._interrupted, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no such signal here
            installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _interrupted(self, sig: signal.Signals) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.stopped_by = sig.name
            self.stopping.set()
            self.changed.set()  # a generator waiting for ends stops now
            how = "Ctrl-C again" if sig == signal.SIGINT else f"{sig.name} again"
            print(
                f"runfleet batch: stopping ({sig.name}): no new items; waiting up to "
                f"{self.cfg.grace:g} s for {len(self.in_flight)} in flight "
                f"({how} to stop now)",
                file=sys.stderr,
                flush=True,
            )
        else:
            self.stop_now.cancel()
