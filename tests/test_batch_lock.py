"""One batch per journal: a second one is refused, naming the first; a dead one's lock is free.

Real ``runfleet batch`` processes against a simulator in the test process, real journal and
lock files; synchronised on the journal's state, never on a guessed delay.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from runfleet.batch.lock import JournalBusy, JournalLock

from .helpers import StartSim
from .test_batch_resume import SLOW, assert_each_once, with_ids
from .test_batch_support import (
    batch,
    creates,
    finish,
    journal_states,
    on,
    spawn,
    until,
    write_items,
)

# Every run calls the gate tool once; the tool holds its batch until the test opens the gate,
# so a batch is alive for certain when the next one knocks, however slow the machine.
GATED = {**SLOW, "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1}}
GATE_TOOL = """
import time
from pathlib import Path

from runfleet import tool


@tool
def wait_for_gate() -> str:
    \"\"\"Answer once the test has opened the gate (a file beside this one).\"\"\"
    gate = Path(__file__).with_name("gate")
    while not gate.exists():
        time.sleep(0.02)
    return "open"


TOOLS = [wait_for_gate]
"""


def gated(tmp_path: Path) -> list[str]:
    """Write the gate tool; return the arguments that register it."""
    (tmp_path / "gate_tool.py").write_text(GATE_TOOL)
    return ["--tools", f"{tmp_path}/gate_tool.py:TOOLS"]


def open_gate(tmp_path: Path) -> None:
    (tmp_path / "gate").touch()


REFUSED = "is in use by another runfleet batch (pid {pid} on {host}, started "


def holder_pid(lock_file: Path) -> int | None:
    """Return the pid the lock file names; None while it is absent or being written."""
    try:
        return int(json.loads(lock_file.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def refusal(stderr: str, pid: int, journal: Path) -> None:
    """Assert the refusal is one line that names the journal and its holder."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"runfleet batch: {journal} "), stderr
    assert REFUSED.format(pid=pid, host=socket.gethostname()) in lines[0], stderr


async def test_a_second_batch_on_the_same_output_is_refused_and_the_first_completes(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    async with start_sim(GATED) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim), *gated(tmp_path)]
        first = await spawn(args)
        await until(lambda: with_ids(journal) > 0)  # it is sending
        second = await batch(args)
        open_gate(tmp_path)
        done = await finish(first)
        stats = sim.stats()
    assert second.returncode == 2, second.stderr
    refusal(second.stderr, first.pid, journal)
    assert second.stdout == ""
    assert done.returncode == 0, done.stderr
    assert creates(stats) == 2 * 30  # the second sent nothing (a tool round is a create)
    assert_each_once(out, 30)
    assert journal_states(journal) == {"done": 30}
    assert not (tmp_path / "out.jsonl.journal.lock").exists()  # released at the end


async def test_a_second_batch_on_the_same_output_with_its_own_journal_is_refused(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Two journals would each send every item and write each line twice into one file."""
    inp = write_items(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    (tmp_path / "link.jsonl").symlink_to(out)  # the same output by another name
    async with start_sim(GATED) as sim:
        args = [str(inp), "--model", "m", *on(sim), *gated(tmp_path)]
        first = await spawn([*args, "--out", str(out)])
        await until(lambda: with_ids(tmp_path / "out.jsonl.journal") > 0)  # it is sending
        second = await batch([*args, "--out", str(tmp_path / "link.jsonl"), "--journal",
                              str(tmp_path / "other.journal")])  # fmt: skip
        open_gate(tmp_path)
        done = await finish(first)
        stats = sim.stats()
    assert second.returncode == 2, second.stderr
    refusal(second.stderr, first.pid, out)
    assert not (tmp_path / "other.journal").exists()  # it wrote nothing
    assert done.returncode == 0, done.stderr
    assert creates(stats) == 2 * 10
    assert_each_once(out, 10)
    assert not (tmp_path / "out.jsonl.lock").exists()


async def test_two_batches_started_at_once_one_runs_and_the_other_is_refused(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    async with start_sim(GATED) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim), *gated(tmp_path)]
        procs = [await spawn(args), await spawn(args)]
        waits = [asyncio.create_task(finish(p)) for p in procs]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)  # the one refused
        open_gate(tmp_path)
        ends = [await w for w in waits]
        stats = sim.stats()
    codes = sorted(e.returncode for e in ends)
    assert codes == [0, 2], [e.stderr for e in ends]
    ran = next(i for i, e in enumerate(ends) if e.returncode == 0)
    refusal(ends[1 - ran].stderr, procs[ran].pid, journal)
    assert creates(stats) == 2 * 20  # each item once, and its tool round
    assert_each_once(out, 20)


async def test_after_kill_9_a_resume_takes_the_lock_and_holds_it(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    lock_file = tmp_path / "out.jsonl.journal.lock"
    async with start_sim(GATED) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim), *gated(tmp_path)]
        killed = await spawn(args)
        try:
            await until(lambda: with_ids(journal) == 30)
        finally:
            killed.kill()
            await finish(killed)
        assert holder_pid(lock_file) == killed.pid  # stale, not held
        resume = await spawn(args)
        await until(lambda: holder_pid(lock_file) == resume.pid)
        third = await batch(args)
        open_gate(tmp_path)
        resumed = await finish(resume)
        stats = sim.stats()
    assert third.returncode == 2, third.stderr
    refusal(third.stderr, resume.pid, journal)
    assert resumed.returncode == 0, resumed.stderr
    assert creates(stats) == 2 * 30  # none created again on resume
    assert_each_once(out, 30)
    assert not lock_file.exists()


def test_the_lock_names_its_holder_and_is_free_once_released(tmp_path: Path) -> None:
    """flock locks belong to an open file: a second take in the same process is refused too."""
    journal = tmp_path / "j.journal"
    lock = JournalLock.take(journal)
    with pytest.raises(JournalBusy) as busy:
        JournalLock.take(journal)
    assert busy.value.holder is not None
    assert busy.value.holder.pid == os.getpid()
    lock.release()
    assert not (tmp_path / "j.journal.lock").exists()
    JournalLock.take(journal).release()  # free again
