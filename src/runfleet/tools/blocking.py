"""Async handlers that hold the event loop: each step of their coroutine is timed, and named.

An ``async def`` tool that calls ``time.sleep``, ``requests`` or any blocking client holds the
one loop every run of the fleet shares: polls, timeouts and the quota stop until it returns.
In issue 18 one such tool made 20 runs take 132 s instead of 12, held the loop up to 18 s,
caused 24 request timeouts, and nothing said which tool it was.

How a block is seen: the handler's coroutine is driven one step at a time, and each step (from
being resumed to its next suspension) is timed with ``time.perf_counter()``. While a step runs
the loop can run nothing else, so a step longer than :data:`BLOCK_THRESHOLD` is a block, pinned
on the tool that took it, with its exact length. A heartbeat task (the fleet runs one for its
loop-lag figures) sees that the loop was late but not who held it: with several tools in flight
it could only guess, and it sees a block only from its next due time on. Cost: two clock reads
and one generator hop per step, a microsecond or so; a handler pays it at each suspension,
never while it waits.

Wall time, not CPU time: a sleep or a blocking read uses no CPU, and those are the usual
culprits; and not the loop's clock, which a test's fake clock (looptime) holds still while the
loop is blocked. A step also counts time the OS kept the process off the CPU, so on a crowded
machine a long CPU-bound step may be reported too; it held the loop all the same.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from ..logs import get_logger

__all__ = ["BLOCK_THRESHOLD", "BlockWatch", "OnBlock"]

T = TypeVar("T")

OnBlock = Callable[[str, float], None]
"""Told the tool's name and the seconds of each step that held the loop past the threshold."""

BLOCK_THRESHOLD = 0.1
"""Seconds one step may hold the loop: well above a step's usual microseconds (parsing a large
reply can take tens of milliseconds), well below what delays polls and timeouts."""

ADVICE = (
    "make the handler a plain `def` (sync handlers run in a worker thread) or wrap the "
    "blocking call in `await anyio.to_thread.run_sync(...)`"
)

log = get_logger(__name__)


class BlockWatch:
    """Time each step of async handlers; warn once per tool that blocks, report every block.

    Args:
        on_block: told of every block (the fleet counts them in its stats).
        threshold: seconds a step may hold the loop before it is a block.
    """

    def __init__(self, on_block: OnBlock | None = None, *, threshold: float = BLOCK_THRESHOLD):
        self._on_block = on_block
        self._threshold = threshold
        self._warned: set[str] = set()

    async def run(self, name: str, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro``, the coroutine of tool ``name``'s handler, timing each of its steps."""
        return await _stepped(coro, lambda held: self._blocked(name, held), self._threshold)

    def _blocked(self, name: str, held: float) -> None:
        if name not in self._warned:
            self._warned.add(name)
            # Once per tool: a tool called thousands of times would bury every other line.
            log.warning("tool_blocks_loop", tool=name, blocked_for=round(held, 3), advice=ADVICE)
        if self._on_block is not None:
            self._on_block(name, held)


@types.coroutine
def _stepped(
    coro: Coroutine[Any, Any, T], blocked: Callable[[float], None], threshold: float
) -> Generator[Any, Any, T]:
    """Drive ``coro`` as ``await`` would, calling ``blocked`` after each step over ``threshold``.

    What the loop sends or throws in (results, cancellation) goes on to ``coro`` unchanged,
    and what ``coro`` yields (futures, trio's traps) goes out to the loop unchanged.
    """
    clock = time.perf_counter
    value: Any = None
    error: BaseException | None = None
    while True:
        began = clock()
        try:
            signal = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            held = clock() - began
            if held > threshold:
                blocked(held)
        error = None  # not kept alive (with its traceback) while the handler waits
        try:
            value = yield signal
        except GeneratorExit:  # the awaiting coroutine is closed: close the handler's too
            coro.close()
            raise
        except BaseException as exc:  # handed on to the handler, as `await` does: it re-raises
            value, error = None, exc
