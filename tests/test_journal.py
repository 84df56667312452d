"""The batch journal on a real SQLite file, and the output file's repair on resume."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runfleet.batch.files import OutputFile, read_items, written_ids
from runfleet.batch.journal import Journal, JournalMismatch
from runfleet.batch.records import OutputLine


def reopen(journal: Journal) -> Journal:
    journal.close()
    return Journal(journal.path)


def test_ids_survive_the_process_as_soon_as_they_are_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.submitting("a", 1, "responses")
    journal.started("a", response_id="resp_1")
    journal.submitting("b", 2, "assistants")
    journal.started("b", thread_id="thread_1", run_id="run_1")
    journal.submitting("c", 3, "responses")
    # Another connection (another process) sees every committed change, without a close.
    with sqlite3.connect(tmp_path / "j") as other:
        rows = dict(other.execute("SELECT id, state FROM items").fetchall())
    assert rows == {"a": "running", "b": "running", "c": "submitting"}
    entries = reopen(journal).entries()
    assert entries["a"].attachable
    assert entries["a"].response_id == "resp_1"
    assert entries["b"].attachable
    assert (entries["b"].thread_id, entries["b"].run_id) == (
        "thread_1",
        "run_1",
    )
    assert not entries["c"].attachable  # its create may or may not have happened: no id


def test_a_chain_that_moved_on_is_reattached_at_its_latest_response(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.submitting("a", 1, "responses")
    journal.started("a", response_id="resp_1")
    journal.moved({"a": "resp_2"})
    assert reopen(journal).entries()["a"].response_id == "resp_2"


def test_a_finished_item_keeps_its_line_and_is_never_moved_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.submitting("a", 1, "responses")
    journal.started("a", response_id="resp_1")
    line = OutputLine("a", 1, "completed", kind="responses", text="é", response_id="resp_1")
    journal.finished("a", line)
    journal.moved({"a": "resp_9"})
    journal = reopen(journal)
    entry = journal.entries()["a"]
    assert entry.state == "done"
    assert entry.output == line
    assert entry.response_id == "resp_1"
    assert list(journal.entries()) == ["a"]


def test_recreated_is_remembered_across_a_new_submission(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.submitting("a", 1, "responses")
    journal.recreated("a")
    journal.submitting("a", 1, "responses")
    journal.started("a", response_id="resp_2")
    assert reopen(journal).entries()["a"].recreated == "gone from the server"


def test_a_journal_of_another_batch_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.bind({"kind": "responses", "target": "gpt-5-mini"})
    journal = reopen(journal)
    journal.bind({"kind": "responses", "target": "gpt-5-mini"})  # the same batch: fine
    with pytest.raises(JournalMismatch, match="target differs"):
        journal.bind({"kind": "responses", "target": "gpt-4o"})


def test_a_torn_last_line_is_cut_so_the_journal_can_write_it_again(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    out = OutputFile(path)
    out.write(OutputLine("a", 1, "invalid"))
    out.close()
    with path.open("ab") as f:
        f.write(b'{"id": "b", "li')  # the process died mid-write
    assert written_ids(path) == {("a", 1)}
    assert path.read_bytes() == b'{"id":"a","line":1,"status":"invalid","text":null,"error":null}\n'


def test_input_ids_default_to_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "x"}\n\n{"id": 7, "prompt": "y", "model": "m"}\n')
    source = read_items(path)
    assert [(i.id, i.line, i.model) for i in source.items] == [("1", 1, None), ("7", 3, "m")]
    assert source.invalid == []


def test_a_mark_goes_with_the_ids_and_an_answering_intent_until_the_next_id(
    tmp_path: Path,
) -> None:
    """The mark is written with the ids in one statement; the first reason stays."""
    journal = Journal(tmp_path / "j")
    journal.submitting("a", 1, "responses")
    journal.started("a", response_id="resp_1", recreated="connection lost")
    journal.answering("a")
    journal = reopen(journal)
    entry = journal.entries()["a"]
    assert (entry.recreated, entry.answering) == ("connection lost", True)
    journal.moved({"a": "resp_2"}, recreated="timed out")
    entry = reopen(journal).entries()["a"]
    assert (entry.recreated, entry.answering, entry.response_id) == (
        "connection lost", False, "resp_2"
    )  # fmt: skip


def test_an_older_journal_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "j"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE items (id TEXT PRIMARY KEY, line INTEGER NOT NULL, state TEXT NOT NULL, "
        "kind TEXT, response_id TEXT, thread_id TEXT, run_id TEXT, "
        "recreated INTEGER NOT NULL DEFAULT 0, output TEXT, updated REAL NOT NULL);"
        "INSERT INTO items VALUES ('a', 1, 'running', 'responses', 'resp_1', NULL, NULL, 1, "
        "NULL, 0);"
    )
    db.close()
    entry = Journal(path).entries()["a"]
    assert (entry.recreated, entry.answering, entry.attachable) == (
        "gone from the server", False, True
    )  # fmt: skip
