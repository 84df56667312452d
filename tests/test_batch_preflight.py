"""``runfleet batch`` refused before it starts: one line, exit 2, and no file left behind."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from runfleet.batch.journal import Journal

from .helpers import StartSim
from .test_batch_support import batch, finish, journal_states, on, spawn, write_items

UNREACHABLE = ["--base-url", "http://127.0.0.1:9/v1"]
BROKEN_TOOLS = 'raise RuntimeError("no tools today")\n'


def files(where: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(where.iterdir())}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param(case, message, id=case)
        for case, message in [
            ("undecorated tool", "--tools 'json:dumps': tool 'dumps': parameter 'obj' needs a"),
            ("tools raise on import", "importing {tmp}/broken.py raised RuntimeError: no tools"),
            ("unreachable server", "cannot reach http://127.0.0.1:9/v1/"),
            ("refused key", "the server refused the API key ...1234 (HTTP 401)"),
            ("journal of another batch", "{tmp}/other.journal was written for another batch"),
            ("unreachable redis", "--redis: cannot reach Redis at redis://127.0.0.1:9/0 (account"),
        ]
    ],
)
async def test_a_refused_batch_says_why_in_one_line_and_leaves_no_file(
    start_sim: StartSim, tmp_path: Path, case: str, message: str
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 2)
    (tmp_path / "broken.py").write_text(BROKEN_TOOLS)
    other = Journal(tmp_path / "other.journal")
    other.bind({"kind": "responses", "target": "another-model"})
    other.close()
    before = files(tmp_path)
    args = [str(inp), "--out", str(tmp_path / "out.jsonl"), "--model", "m"]
    async with start_sim(api_key="sk-the-only-good-key" if case == "refused key" else None) as sim:
        extra = {
            "undecorated tool": ["--tools", "json:dumps", *on(sim)],
            "tools raise on import": ["--tools", f"{tmp_path}/broken.py:TOOLS", *on(sim)],
            "unreachable server": UNREACHABLE,
            "refused key": on(sim),
            "journal of another batch": ["--journal", str(tmp_path / "other.journal"), *on(sim)],
            "unreachable redis": ["--redis", "redis://:secret@127.0.0.1:9/0", *on(sim)],
        }[case]
        done = await batch([*args, *extra])
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("runfleet batch: ")
    assert message.format(tmp=tmp_path) in line
    assert files(tmp_path) == before  # no output, no journal, nothing touched


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
async def test_a_failed_preflight_keeps_a_resumable_batch_as_it_was(
    tmp_path: Path, fresh: list[str]
) -> None:
    """Files this invocation did not create are never removed, even when told to start over."""
    inp = write_items(tmp_path / "in.jsonl", 2)
    out, journal_path = tmp_path / "out.jsonl", tmp_path / "out.jsonl.journal"
    journal = Journal(journal_path)
    journal.bind({"kind": "responses", "target": "m"})
    journal.submitting("item0", 1, "responses")
    journal.started("item0", response_id="resp_kept")
    journal.close()
    out.write_text('{"id":"item1","line":2}\n')
    before = files(tmp_path)
    done = await batch([str(inp), "--out", str(out), "--model", "m", *UNREACHABLE, *fresh])
    assert done.returncode == 2
    assert files(tmp_path) == before
    assert journal_states(journal_path) == {"running": 1}


async def test_sigterm_while_preflight_waits_for_the_server_says_so_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    """A server that accepts and never answers holds the probe: SIGTERM arrives right there."""
    inp = write_items(tmp_path / "in.jsonl", 2)
    before = files(tmp_path)
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        url = ["--base-url", f"http://127.0.0.1:{port}/v1"]
        proc = await spawn([str(inp), "--out", str(tmp_path / "out.jsonl"), "--model", "m", *url])
        await asyncio.wait_for(connected.wait(), 20)
        proc.send_signal(signal.SIGTERM)
        done = await finish(proc)
        for writer in held:
            writer.close()
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == [
        "runfleet batch: stopped by SIGTERM before any item started"
    ]
    assert files(tmp_path) == before
