"""One batch per journal and per output: an OS lock on ``PATH.lock``, held for its whole life.

Two batches on one journal would both send every unfinished item and append to one output;
two on one output (each with its own ``--journal``) would write every item twice into it. So
a batch locks both, and a second one is refused, naming the first (pid, host, start time,
written into the lock file once it is taken).

Why ``flock`` on a file beside the journal, not SQLite's own locking:

- the kernel drops the lock when its holder dies, ``kill -9`` included, so a resume takes it
  at once; a lock file that outlives its holder is harmless (its pid is merely stale);
- the journal stays readable while a batch runs (``sqlite3 results.jsonl.journal``, the
  tests' look at its states); ``locking_mode=EXCLUSIVE`` would shut every reader out, and
  SQLite's "database is locked" cannot say who holds it;
- not the journal file itself: SQLite locks it with POSIX ``fcntl`` locks, which a process
  loses when it closes *any* descriptor of that file.

The file is removed on release, while still locked; a contender that locked a file just
removed sees that the path no longer names it and tries again, so two holders never meet.
File descriptors are not inherited across ``exec`` (PEP 446): a tool's subprocess cannot keep
the lock alive after the batch dies.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Holder", "JournalBusy", "JournalLock"]


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a journal: what the lock file says."""

    pid: int
    host: str
    started: str  # ISO 8601, local time with its offset

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


class JournalBusy(Exception):
    """Raised when another process holds the lock of a journal (or an output).

    ``holder`` is None while the holder has locked the file but not yet written who it is.
    """

    def __init__(self, journal: Path, holder: Holder | None) -> None:
        self.journal = journal
        self.holder = holder
        who = str(holder) if holder is not None else "a process that is starting"
        super().__init__(
            f"{journal} is in use by another runfleet batch ({who}); wait for it to end, "
            "or give this one another --out or --journal"
        )


class JournalLock:
    """The exclusive lock on one journal, taken with :meth:`take`, ended by :meth:`release`.

    Example::

        lock = JournalLock.take(Path("results.jsonl.journal"))
        try:
            ...  # open the journal and the output, run the batch
        finally:
            lock.release()
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, journal: Path) -> JournalLock:
        """Lock ``journal`` (or an output) for this process and write who holds it; never wait.

        Raises:
            JournalBusy: another process holds it.
            OSError: the lock file cannot be created.
        """
        path = journal.with_name(journal.name + ".lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalBusy(journal, _read(path)) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(path, fd):
                break
            os.close(fd)  # its holder removed it as we opened it: lock the one there now
        lock = cls(path, fd)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(fd, 0)  # a dead holder's lines go: the file is ours now
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return lock

    def release(self) -> None:
        """Remove the lock file, then unlock it (in that order: see the module docstring)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        finally:
            os.close(fd)  # closing the last descriptor drops the lock


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _read(path: Path) -> Holder | None:
    """Return who the lock file names, or None if it names no one yet."""
    try:
        data = json.loads(path.read_text())
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
