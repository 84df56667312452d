"""The SQLite journal of a batch: each item's ids as soon as they exist, then its result.

A batch that is killed (``kill -9``, Ctrl-C, a crash) resumes from it: finished items are
not sent again, items whose runs exist on the server are re-attached by id, the rest start.
Every method is one committed transaction, so the file is consistent whenever the process
stops. WAL with ``synchronous=NORMAL`` survives a killed process (not a power cut) at a
fraction of the cost of a full sync per item.

States of an item: ``submitting`` (its create request may be on the wire; no id yet),
``running`` (its ids are known; ``answering`` says a tool round's new response may be on the
wire), ``done`` (its output line is recorded here first, then appended to the output file).
An item that may have been created twice says so (``recreated``) with the reason, from the
moment it is known: a crash cannot lose the mark.

A journal is bound to the kind of batch, its target (the model or the assistant) and its
completion window: resuming with another of either would attach runs to the wrong thing. It
keeps the continuation id of each item's runs (derived from one random id of the batch), so a
batch that waits hours in the ``8h`` window can be resumed days later on another machine from
the journal file alone, its tool rounds still queued with priority. The input file is not bound:
items are known by id, so on resume lines added or fixed since start, finished ones stay.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import OutputLine

__all__ = ["Journal", "JournalEntry", "JournalMismatch"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    kind TEXT,
    response_id TEXT,
    thread_id TEXT,
    run_id TEXT,
    recreated INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    updated REAL NOT NULL
);
"""
# Columns added since the first journals; an older journal gets them when opened.
_ADDED = {"recreated_reason": "TEXT", "answering": "INTEGER NOT NULL DEFAULT 0"}


class JournalMismatch(Exception):
    """Raised when a journal was written for another kind of batch or another target."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What the journal knows of one item."""

    id: str
    line: int
    state: str
    kind: str | None
    response_id: str | None
    thread_id: str | None
    run_id: str | None
    recreated: str | None  # why it may have been created twice, or None
    output: OutputLine | None
    answering: bool = False  # stopped while a tool round's new response was on the wire

    @property
    def attachable(self) -> bool:
        """Whether its run exists on the server and can be watched by id."""
        if self.state != "running":
            return False
        if self.kind == "responses":
            return bool(self.response_id)
        return bool(self.thread_id and self.run_id)


class Journal:
    """One batch's journal file.

    Example::

        journal = Journal(Path("results.jsonl.journal"))
        journal.bind({"kind": "responses", "target": "gpt-5-mini"})
        journal.submitting("item-1", 1, "responses")
        journal.started("item-1", response_id="resp_...")
    """

    def __init__(self, path: Path) -> None:
        """Open (or create) the journal at ``path``.

        Raises:
            sqlite3.Error: the file is not a journal or cannot be written.
        """
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
        for column, decl in _ADDED.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE items ADD COLUMN {column} {decl}")
        self._continuation: str | None = None

    def bind(self, meta: Mapping[str, str]) -> None:
        """Record what this batch is; refuse a journal recorded for a different one.

        Raises:
            JournalMismatch: a key of ``meta`` was recorded with another value.
        """
        known = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for key, value in meta.items():
            if key in known and known[key] != value:
                raise JournalMismatch(
                    f"{self.path} was written for another batch ({key} differs); "
                    "pass --fresh to start over or --journal to use another file"
                )
        self._many("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))

    def continuation_id(self, item_id: str) -> str:
        """Return the continuation id of the item's runs: the same in every session, since a
        tool round that reuses its run's id is queued with priority."""
        if self._continuation is None:
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('continuation', ?)",
                (uuid.uuid4().hex,),
            )
            row = self._db.execute("SELECT value FROM meta WHERE key='continuation'").fetchone()
            self._continuation = str(row[0])
        digest = hashlib.sha256(f"{self._continuation}:{item_id}".encode()).hexdigest()[:32]
        return f"rf_{digest}"

    def entries(self) -> dict[str, JournalEntry]:
        """Return every item the journal knows, by id."""
        rows = self._db.execute(
            "SELECT id, line, state, kind, response_id, thread_id, run_id, recreated, output, "
            "recreated_reason, answering FROM items"
        ).fetchall()
        return {
            row[0]: JournalEntry(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                (row[9] or "gone from the server") if row[7] else None,
                OutputLine.from_data(json.loads(row[8])) if row[8] is not None else None,
                bool(row[10]),
            )
            for row in rows
        }

    def submitting(self, item_id: str, line: int, kind: str) -> None:
        """Record that the item's create request is about to go out."""
        self._db.execute(
            "INSERT INTO items (id, line, state, kind, updated) VALUES (?, ?, 'submitting', ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state='submitting', kind=excluded.kind, "
            "response_id=NULL, thread_id=NULL, run_id=NULL, answering=0, "
            "updated=excluded.updated",
            (item_id, line, kind, time.time()),
        )

    def started(
        self,
        item_id: str,
        *,
        response_id: str | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        recreated: str | None = None,
    ) -> None:
        """Record the ids of the item's run, the moment they exist, and in the same write
        why it may exist twice (``recreated``: its create was ambiguous and sent again)."""
        self._db.execute(
            "UPDATE items SET state='running', response_id=?, thread_id=?, run_id=?, updated=?, "
            "answering=0, recreated=max(recreated, ?), "
            "recreated_reason=coalesce(recreated_reason, ?) WHERE id=?",
            (response_id, thread_id, run_id, time.time(), recreated is not None, recreated,
             item_id),
        )  # fmt: skip

    def answering(self, item_id: str) -> None:
        """Record that a tool round's new response is about to be created (write-ahead)."""
        self._db.execute(
            "UPDATE items SET answering=1, updated=? WHERE id=? AND state='running'",
            (time.time(), item_id),
        )

    def moved(self, changes: Mapping[str, str], recreated: str | None = None) -> None:
        """Record new response ids of Responses chains (a tool round makes a new response);
        ``recreated``: why that round's response may exist twice (one item's change only)."""
        if not changes:
            return
        now = time.time()
        sql = "UPDATE items SET response_id=?, updated=?, answering=0"
        args: tuple[Any, ...] = ()
        if recreated is not None:
            sql += ", recreated=1, recreated_reason=coalesce(recreated_reason, ?)"
            args = (recreated,)
        self._many(
            sql + " WHERE id=? AND state='running'",
            [(rid, now, *args, item_id) for item_id, rid in changes.items()],
        )

    def recreated(self, item_id: str, reason: str = "gone from the server") -> None:
        """Mark the item as created more than once, maybe, and why (the first reason stays)."""
        self._db.execute(
            "UPDATE items SET recreated=1, recreated_reason=coalesce(recreated_reason, ?) "
            "WHERE id=?",
            (reason, item_id),
        )

    def finished(self, item_id: str, record: OutputLine) -> None:
        """Record the item's output line; from now on it is never sent again.

        ``item_id`` is the journal's key, which is not the line's id for an invalid line (an
        invalid line's id may be another item's).
        """
        self._db.execute(
            "INSERT INTO items (id, line, state, output, updated) VALUES (?, ?, 'done', ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state='done', output=excluded.output, "
            "updated=excluded.updated",
            (item_id, record.line, json.dumps(record.data(), ensure_ascii=False), time.time()),
        )

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Apply one statement to many rows in one transaction."""
        self._db.execute("BEGIN")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the file (every change is already committed).

        The write-ahead log is folded into the file first, even if a reader still has it open:
        a stopped batch's journal is then one file, to copy alone to another machine.
        """
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
