"""One session of ``runfleet batch``: feeders, the consumer of finished runs, the journal.

The order of events per item is the point of this module:

1. the journal says ``submitting`` (a create may be on the wire);
2. ``await fleet.submit(...)`` returns once the run exists; its ids go to the journal before
   the next ``await``, so no poll, tool round or stop can come between;
3. a Responses chain moves to a new id on each tool round: the fleet's ``on_ids`` hook
   journals the new id before the new response is polled;
4. when the run ends, its output record goes to the journal first, then to the output file,
   so a stop between the two writes the line on resume, never twice.

A resumed batch skips ``done`` items, watches ``running`` ones by id (no new create), and
starts the rest. A run the server no longer knows (a background response is kept about
10 minutes) is recreated once and its line says ``"recreated": true``.

Idle runs cost what they cost the fleet (a heap entry) plus one dict entry here: a run's end
is a done-callback that queues it for the one consumer task, not a task per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from openai import AsyncOpenAI

from ..engine.handle import RunHandle
from ..errors import AuthError, RunfleetError, RunNotFound, RunRejected
from ..fleet import Fleet
from ..kinds.assistants import AssistantRunSpec
from ..kinds.responses import ResponseSpec
from ..polling.learning import PollPolicy
from ..polling.schedule import Backoff
from ..stats import FleetStats
from ..tools import ToolRegistry
from .files import InputFile, OutputFile, written_ids
from .journal import Journal, JournalEntry
from .progress import ProgressState, ProgressView, progress_view
from .records import BatchItem, OutputLine
from .report import BatchSummary, Tally, classic_requests

__all__ = ["BatchConfig", "BatchError", "BatchSession"]

log = structlog.get_logger("runfleet.batch.preflight")
_TICK = 0.25


class BatchError(Exception):
    """Raised when a batch cannot start (bad input under --strict, no key, no server...)."""


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """What ``runfleet batch`` was asked to do; see ``runfleet batch --help``."""

    input: Path
    out: Path
    model: str | None = None
    assistant: str | None = None
    rpm: float | None = None
    max_in_flight: int = 200
    timeout: float | None = None
    tools: tuple[Any, ...] = ()
    api_key: str | None = None
    base_url: str | None = None
    journal: Path | None = None
    summary_json: Path | None = None
    strict: bool = False
    fresh: bool = False
    grace: float = 60.0
    progress: str = "auto"
    progress_every: float = 10.0
    sim: str | None = None
    sim_time_scale: float = 1.0

    @property
    def journal_path(self) -> Path:
        """Where the journal lives: ``--journal``, or beside the output."""
        return self.journal or self.out.with_name(self.out.name + ".journal")

    @property
    def kind(self) -> str:
        """``responses`` (``--model``) or ``assistants`` (``--assistant``)."""
        return "assistants" if self.assistant else "responses"


class BatchSession:
    """One session: the feeders, the consumer of finished runs, the ticker."""

    def __init__(
        self, cfg: BatchConfig, source: InputFile, journal: Journal, out: OutputFile, rpm: float
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.out = out
        self.rpm = rpm
        self.scale = cfg.sim_time_scale
        self.tally = Tally(total=len(source.items) + len(source.invalid))
        self.todo: deque[BatchItem] = deque()
        self.attach: list[tuple[BatchItem, JournalEntry]] = []
        self.in_flight: dict[str, tuple[BatchItem, RunHandle, bool, bool]] = {}
        self.journaled_id: dict[str, str] = {}
        self.slots = anyio.Semaphore(cfg.max_in_flight)
        self.stopping = anyio.Event()
        self.idle = anyio.Event()
        self.feeding = True
        self.feeders = min(32, cfg.max_in_flight)
        self.stop_now = anyio.CancelScope()
        self.interrupts = 0
        self._send, self._receive = anyio.create_memory_object_stream[RunHandle](math.inf)
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
                self.tally.already_done += 1
                continue
            self.journal.finished(key, record)
            self.out.write(record)
            self.tally.add(record)
        for item in source.items:
            found = entries.get(item.id)
            if found is not None and found.state == "done":
                self.tally.already_done += 1
            elif found is not None and found.attachable:
                self.attach.append((item, found))
            else:
                if found is not None and found.state == "submitting":
                    log.warning(
                        "batch_item_restarted",
                        item=item.id,
                        why="it stopped while its create was on the wire; a run may exist",
                    )
                self.todo.append(item)

    # -- the session ---------------------------------------------------------------------------

    async def run(self, client: AsyncOpenAI) -> BatchSummary:
        cfg = self.cfg
        policy, burst = None, None
        if self.scale != 1.0:
            # The simulator's time is scaled: so are its windows (a per-second limit becomes
            # per 0.1 s at 0.1) and the run times the classic schedule was made for.
            s = self.scale
            backoff = Backoff(initial=0.5 * s, cap=5 * s, min_interval=0.05 * s)
            policy = PollPolicy(backoff=backoff, stall_unlearned=120 * s, stall_floor=30 * s)
            burst = max(1.0, self.rpm / 60 * s)
        tools = cfg.tools
        self.assistant_tools: tuple[dict[str, Any], ...] = ()
        if tools and cfg.kind == "assistants":
            self.assistant_tools = tuple(
                dict(d) for d in ToolRegistry(tools).definitions("assistants")
            )
        view = progress_view(cfg.progress, every=cfg.progress_every)
        start = anyio.current_time()
        stats = None
        with self._signals():
            with self.stop_now:
                async with Fleet(
                    client, rpm=self.rpm, burst=burst, tools=tools, timeout=cfg.timeout,
                    policy=policy,
                    on_exit="detach",
                ) as fleet:  # fmt: skip
                    self.fleet = fleet
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
            handed_back=len(self.in_flight),
            not_started=len(self.todo),
            interrupted=self.interrupts > 0,
            journal=str(self.cfg.journal_path),
            time_scale=self.scale,
        )

    async def _work(self, view: ProgressView | None, start: float) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick, view, start)
            tg.start_soon(self._consume)
            for item, entry in self.attach:
                await self.slots.acquire()
                if self.stopping.is_set():
                    break
                handle = self._watch(item, entry)
                self._track(item, handle, recreated=entry.recreated, resumed=True)
            self.attach = []
            async with anyio.create_task_group() as feeders:
                for _ in range(self.feeders):
                    feeders.start_soon(self._feed)
            self.feeding = False
            self._check_idle()
            if self.stopping.is_set():
                with anyio.move_on_after(self.cfg.grace):
                    await self.idle.wait()
            else:
                await self.idle.wait()
            tg.cancel_scope.cancel()

    def _watch(self, item: BatchItem, entry: JournalEntry) -> RunHandle:
        """Re-attach to a run that exists on the server: no new create, no new cost."""
        if entry.kind == "responses":
            # A response that asks for tools continues with the item's model and tools.
            self.journaled_id[item.id] = entry.response_id or ""
            return self.fleet.watch(
                response_id=entry.response_id,
                tag=item.id,
                spec=self._spec(item),
                on_ids=self._ids_hook(item),
            )
        return self.fleet.watch(thread_id=entry.thread_id, run_id=entry.run_id, tag=item.id)

    def _ids_hook(self, item: BatchItem) -> Callable[[RunHandle], None]:
        """Journal a run's ids the moment they exist, and each new id of a Responses chain."""

        def journal_ids(handle: RunHandle) -> None:
            known = self.journaled_id.get(item.id)
            if known is None:
                if handle.kind == "responses":
                    self.journal.started(item.id, response_id=handle.id)
                else:
                    self.journal.started(item.id, thread_id=handle.thread_id, run_id=handle.id)
            elif handle.id != known:
                self.journal.moved({item.id: handle.id})
            self.journaled_id[item.id] = handle.id

        return journal_ids

    async def _feed(self) -> None:
        while self.todo and not self.stopping.is_set():
            await self.slots.acquire()
            if self.stopping.is_set() or not self.todo:
                self.slots.release()
                return
            item = self.todo.popleft()
            handle = await self._submit(item)
            if handle is not None:
                self._track(item, handle, recreated=False, resumed=False)

    def _spec(self, item: BatchItem) -> ResponseSpec | AssistantRunSpec:
        if self.cfg.assistant:
            return AssistantRunSpec(
                self.cfg.assistant,
                item.prompt,
                instructions=item.instructions,
                model=item.model,
                metadata=item.metadata,
                tools=self.assistant_tools,
            )
        model = item.model or self.cfg.model
        assert model is not None
        return ResponseSpec(model, item.prompt, item.instructions, item.metadata)

    async def _submit(self, item: BatchItem, *, recreated: bool = False) -> RunHandle | None:
        """Create the item's run and journal its ids; a refused create is the item's line."""
        self.journal.submitting(item.id, item.line, self.cfg.kind)
        try:
            handle = await self.fleet.submit(
                self._spec(item), tag=item.id, on_ids=self._ids_hook(item)
            )
        except AuthError:
            raise
        except RunRejected as exc:
            line = OutputLine.of_error(item, self.cfg.kind, exc, recreated=recreated, resumed=False)
            self._record(line)
            self.slots.release()
            return None
        # The ids went to the journal in the on_ids hook, before the fleet did anything else.
        return handle

    def _track(self, item: BatchItem, handle: RunHandle, *, recreated: bool, resumed: bool) -> None:
        self.in_flight[item.id] = (item, handle, recreated, resumed)
        self.journaled_id[item.id] = handle.id
        handle.add_done_callback(self._finished)

    def _finished(self, handle: RunHandle) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(handle)

    # -- ends of runs --------------------------------------------------------------------------

    async def _consume(self) -> None:
        async for handle in self._receive:
            await self._ended(handle)

    async def _ended(self, handle: RunHandle) -> None:
        found = self.in_flight.get(str(handle.tag))
        if found is None or found[1] is not handle:
            return
        item, _, recreated, resumed = found
        error = handle.exception()
        if isinstance(error, AuthError):
            # Not the item's fault: leave it unfinished in the journal and stop the batch.
            raise BatchError(f"the server refused the API key: {error}")
        if error is not None and self._handed_back(error):
            return  # stays "running" in the journal: the next session re-attaches it
        del self.in_flight[item.id]
        if isinstance(error, RunNotFound) and not recreated and not self.stopping.is_set():
            # A background response is kept about 10 minutes: it aged out. Once, and said so.
            log.warning("batch_item_recreated", item=item.id, gone=error.run_id)
            self.journal.recreated(item.id)
            new = await self._submit(item, recreated=True)
            if new is not None:
                self._track(item, new, recreated=True, resumed=resumed)
            self._check_idle()
            return
        classic = None
        if error is None:
            result = await handle
            record = OutputLine.of_result(item, result, recreated=recreated, resumed=resumed)
            classic = classic_requests(result, self.scale)
        else:
            record = OutputLine.of_error(
                item, handle.kind, error, recreated=recreated, resumed=resumed
            )
        self._record(record, classic)
        self.slots.release()
        self._check_idle()

    def _handed_back(self, error: RunfleetError) -> bool:
        return self.stopping.is_set() and "fleet closed" in str(error)

    def _record(self, record: OutputLine, classic: int | None = None) -> None:
        """Journal the record, then append it: a stop in between rewrites it on resume."""
        self.journal.finished(record.id, record)
        self.out.write(record)
        self.tally.add(record, classic)

    def _check_idle(self) -> None:
        if not self.feeding and not self.in_flight:
            self.idle.set()

    # -- ticking -------------------------------------------------------------------------------

    async def _tick(self, view: ProgressView | None, start: float) -> None:
        while True:
            stats = self.fleet.stats()
            self.tally.peak_rpm = max(self.tally.peak_rpm, stats.requests_last_minute)
            if view is not None:
                view.update(self._state(stats, start))
            await anyio.sleep(_TICK)

    def _state(self, stats: FleetStats | None, start: float) -> ProgressState:
        return ProgressState(
            total=self.tally.total,
            done=self.tally.done,
            in_flight=len(self.in_flight),
            failed=self.tally.failed,
            rpm=stats.requests_last_minute if stats else 0,
            quota=stats.quota.effective_rpm if stats and stats.quota else self.rpm,
            elapsed=anyio.current_time() - start,
        )

    # -- Ctrl-C --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """First SIGINT: start nothing new, let in-flight runs finish. Second: stop now."""
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._interrupted)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            installed = False  # not the main thread, or no signals here
        try:
            yield
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    def _interrupted(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.stopping.set()
            for _ in range(self.feeders + len(self.attach) + 1):
                self.slots.release()  # wake feeders waiting for a slot: they see `stopping`
            print(
                f"runfleet batch: stopping: no new items; waiting up to {self.cfg.grace:g} s "
                f"for {len(self.in_flight)} in flight (Ctrl-C again to stop now)",
                file=sys.stderr,
                flush=True,
            )
        else:
            self.stop_now.cancel()
