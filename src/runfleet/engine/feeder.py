"""The feeder: start many runs with at most N in flight, and yield each handle as it ends.

It owns :class:`Submission` (a run to create, or the ids of one to attach to) and the bounded
loop behind :meth:`runfleet.Fleet.map`. How one submission becomes a tracked run is the
fleet's: the feeder is handed an ``open`` callable.

A slot is taken *before* the next item is pulled from the source. A generator that does
something just before it yields an item (``runfleet batch`` journals a write-ahead intent)
therefore never does it for an item that would then wait for a slot, and never for one that
a stop leaves unsent: whatever it yields is opened at once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import RunfleetError
from ..kinds.assistants import AssistantRunSpec
from ..kinds.responses import ResponseSpec
from .handle import RunHandle

__all__ = ["Opener", "Submission", "feed"]

Spec = ResponseSpec | AssistantRunSpec


@dataclass(frozen=True, slots=True)
class Submission:
    """One run for :meth:`~runfleet.Fleet.map`: a spec to create, or ids to attach to.

    A submission with ids is watched, not created (a run that already exists, e.g. one a
    resumed batch journaled): ``response_id``, or ``thread_id`` and ``run_id``. ``spec`` then
    says how a Responses chain continues after a tool round (model, instructions, tools).

    Args:
        spec: what to create (or how an attached chain goes on).
        tag: given back as ``handle.tag``.
        on_ids: called with the handle as soon as the run's ids exist and each time a
            Responses chain moves to a new id, before anything else happens to the run.
        response_id: attach to this background response.
        thread_id: with ``run_id``, attach to this Assistants run.
        run_id: see ``thread_id``.

    Raises:
        TypeError: ``spec`` is not a ``ResponseSpec`` or ``AssistantRunSpec``.
        ValueError: neither a spec nor ids, or ids of both kinds or half of a pair.
    """

    spec: Spec | None = None
    tag: Any = None
    on_ids: Callable[[RunHandle], None] | None = None
    response_id: str | None = None
    thread_id: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.spec is not None and not isinstance(self.spec, ResponseSpec | AssistantRunSpec):
            raise TypeError(
                f"expected a ResponseSpec, AssistantRunSpec or Submission, "
                f"not {type(self.spec).__name__}"
            )
        assistants = self.thread_id is not None or self.run_id is not None
        if assistants and not (self.thread_id and self.run_id):
            raise ValueError("a Submission attaches to an Assistants run by thread_id and run_id")
        if assistants and self.response_id is not None:
            raise ValueError("a Submission attaches by response_id, or by thread_id and run_id")
        if self.spec is None and not self.attaches:
            raise ValueError("a Submission needs a spec to create, or ids to attach to")

    @property
    def attaches(self) -> bool:
        """Whether it names a run that exists (watched, not created)."""
        return bool(self.response_id or self.run_id)


Opener = Callable[[Submission], Awaitable[RunHandle]]
"""Turns one submission into a tracked run; raises a ``RunfleetError`` when none can start."""


async def feed(
    items: Iterable[Spec | Submission] | AsyncIterable[Spec | Submission],
    open_run: Opener,
    tg: TaskGroup,
    *,
    max_in_flight: int,
) -> AsyncGenerator[RunHandle, None]:
    """Open every item, at most ``max_in_flight`` at once; yield each handle once it has ended.

    A plain spec is created with its position in ``items`` as its tag. The runs are opened in
    tasks of ``tg`` (the fleet's), so creates go out concurrently. When ``open_run`` refuses
    (the fleet is closing, or broke), nothing more is pulled; the runs already open are still
    yielded as they end. An error raised by ``items`` (or a bad item) is raised here.

    Raises:
        ValueError: ``max_in_flight`` is below 1.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    send, receive = anyio.create_memory_object_stream[RunHandle | Exception](math.inf)
    tg.start_soon(_pump, items, open_run, tg, max_in_flight, send)
    async with receive:
        async for got in receive:
            if isinstance(got, Exception):
                raise got
            yield got


async def _pump(
    items: Iterable[Spec | Submission] | AsyncIterable[Spec | Submission],
    open_run: Opener,
    tg: TaskGroup,
    max_in_flight: int,
    send: MemoryObjectSendStream[RunHandle | Exception],
) -> None:
    """Pull, open and hand on; close ``send`` when the source and every run have ended."""
    slots = anyio.Semaphore(max_in_flight)
    outstanding = 1  # the pump itself, until it has pulled everything
    refused = False
    pulling = anyio.CancelScope()

    def deliver(got: RunHandle | Exception) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            send.send_nowait(got)  # fails only when the consumer stopped reading

    def settle_one() -> None:
        nonlocal outstanding
        outstanding -= 1
        if outstanding == 0:
            send.close()

    def ended(handle: RunHandle) -> None:
        slots.release()
        deliver(handle)
        settle_one()

    async def start(submission: Submission) -> None:
        nonlocal refused
        try:
            handle = await open_run(submission)
        except RunfleetError:  # the fleet is closing or broke: this one never started
            refused = True
            # A source waiting for something (e.g. for runs to end) would wait forever.
            pulling.cancel()
            slots.release()
            settle_one()
            return
        handle.add_done_callback(ended)

    source = _Source(items)
    try:
        while True:
            await slots.acquire()  # first the slot, then the item: see the module docstring
            if refused:
                break
            submission = None
            with anyio.CancelScope() as pulling:
                try:
                    submission = await source.next()
                except Exception as exc:  # the source's own error or a bad item: the consumer's
                    deliver(exc)
                    break
            if submission is None or refused:
                break
            outstanding += 1
            # Concurrently (each create still passes the quota and the gate's bound): one at
            # a time, a 300 ms create would start 3 runs a second.
            tg.start_soon(start, submission)
    finally:
        await source.aclose()
        settle_one()


class _Source:
    """The items of :func:`feed`, sync or async, each as a :class:`Submission`."""

    def __init__(
        self, items: Iterable[Spec | Submission] | AsyncIterable[Spec | Submission]
    ) -> None:
        self._async = aiter(items) if isinstance(items, AsyncIterable) else None
        self._sync = iter(items) if not isinstance(items, AsyncIterable) else None
        self._index = 0

    async def next(self) -> Submission | None:
        """Return the next item as a submission, or None when there are no more."""
        try:
            if self._async is not None:
                item = await anext(self._async)
            else:
                assert self._sync is not None
                item = next(self._sync)
        except (StopIteration, StopAsyncIteration):
            return None
        index, self._index = self._index, self._index + 1
        return item if isinstance(item, Submission) else Submission(item, tag=index)

    async def aclose(self) -> None:
        """Close an async generator left half-read, so its ``finally`` blocks run now."""
        close = getattr(self._async, "aclose", None)
        if close is not None:
            await close()
