"""How a batch shows its progress: a live bar on a terminal, periodic plain lines elsewhere."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["BarProgress", "LineProgress", "ProgressState", "ProgressView", "progress_view"]


@dataclass(frozen=True, slots=True)
class ProgressState:
    """One look at a batch: items done of total, in flight, failed, invalid, requests/min.

    ``done`` counts the file's items with a line, those of earlier sessions too; ``ended``
    only this session's, which is what the rate behind the ETA is made of. ``grace_left`` is
    set once Ctrl-C stopped new starts: then only the runs in flight are left to wait for.
    """

    total: int
    done: int
    in_flight: int
    failed: int
    rpm: int
    quota: float
    elapsed: float
    invalid: int = 0
    ended: int | None = None
    grace_left: float | None = None
    tpm: int = 0  # tokens runs used in the last 60 s (as their usage was reported)
    token_limit: float | None = None  # None: tokens are not limited, and not shown

    @property
    def eta(self) -> float | None:
        """Seconds left at this session's rate so far, or None before anything ended."""
        ended = self.done if self.ended is None else self.ended
        if ended <= 0 or self.elapsed <= 0:
            return None
        per_item = self.elapsed / ended
        if self.grace_left is not None:  # stopping: the runs in flight, at most the grace
            return min(self.in_flight * per_item, max(0.0, self.grace_left))
        return (self.total - self.done) * per_item

    @property
    def eta_text(self) -> str:
        """The ETA as shown: whole seconds, "-" before any item ended, marked while stopping."""
        eta = self.eta
        text = "-" if eta is None else f"{math.ceil(eta)}s"
        return text if self.grace_left is None else f"{text} (stopping)"

    def line(self) -> str:
        """Return the state as one plain line."""
        return (
            f"runfleet batch: {self.done}/{self.total} done, {self.in_flight} in flight, "
            f"{self.failed} failed, {self.invalid} invalid, "
            f"{self.rpm}/{self.quota:.0f} requests/min, {self.tokens_text}ETA {self.eta_text}"
        )

    @property
    def tokens_text(self) -> str:
        """Tokens used this minute against the limit, as a clause; empty if unlimited."""
        if self.token_limit is None:
            return ""
        return f"{self.tpm}/{self.token_limit:.0f} tokens/min, "


class ProgressView(Protocol):
    """Where progress goes; ``update`` is called a few times a second."""

    def update(self, state: ProgressState) -> None:
        """Show the current state."""
        ...

    def close(self) -> None:
        """Stop showing progress (and leave the last state visible)."""
        ...


class BarProgress:
    """A rich progress bar on the terminal (stderr)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("in flight {task.fields[in_flight]}"),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn("invalid {task.fields[invalid]}"),
            TextColumn("{task.fields[rpm]} req/min"),
            TextColumn("{task.fields[tpm]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "batch", total=None, in_flight=0, failed=0, invalid=0, rpm="-", tpm="", eta="-"
        )
        self._progress.start()

    def update(self, state: ProgressState) -> None:
        """Redraw the bar."""
        self._progress.update(
            self._task,
            total=state.total,
            completed=state.done,
            in_flight=state.in_flight,
            failed=state.failed,
            invalid=state.invalid,
            rpm=f"{state.rpm}/{state.quota:.0f}",
            tpm=state.tokens_text.removesuffix(", "),
            eta=state.eta_text,
        )

    def close(self) -> None:
        """Stop the live display."""
        self._progress.stop()


class LineProgress:
    """One plain line every ``every`` seconds (CI logs, pipes)."""

    def __init__(self, stream: TextIO, every: float) -> None:
        self._stream = stream
        self._every = every
        self._next = 0.0
        self._last: ProgressState | None = None

    def update(self, state: ProgressState) -> None:
        """Print a line if ``every`` seconds passed since the last one."""
        self._last = state
        if state.elapsed >= self._next:
            self._next = state.elapsed + self._every
            print(state.line(), file=self._stream, flush=True)

    def close(self) -> None:
        """Print the final state."""
        if self._last is not None:
            print(self._last.line(), file=self._stream, flush=True)


def progress_view(
    mode: str, *, every: float = 10.0, stream: TextIO | None = None
) -> ProgressView | None:
    """Return the view for ``mode``: ``auto`` (bar on a terminal), ``bar``, ``lines`` or ``off``."""
    out = stream if stream is not None else sys.stderr
    if mode == "off":
        return None
    if mode == "bar" or (mode == "auto" and out.isatty()):
        return BarProgress(Console(file=out))
    return LineProgress(out, every)
