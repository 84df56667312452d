"""A batch stopped halfway — ``kill -9``, Ctrl-C, Ctrl-C twice — resumes without waste.

The simulator runs in the test process and outlives the batch process, like OpenAI outlives
a crashed client; the tests synchronise on the journal's state, never on a guessed delay.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from .helpers import StartSim
from .test_batch_support import (
    batch,
    creates,
    finish,
    journal_states,
    on,
    read_output,
    spawn,
    until,
    write_items,
)

# The Assistants variants of the kill -9 tests share the journal's code path with the Responses
# ones; they run in `make soak` so that `make test` stays within its budget.
KINDS_SOAK = ["responses", pytest.param("assistants", marks=pytest.mark.soak)]
# Runs of 0.5 to 1.5 s (scenario seconds x 0.01): long enough to stop a batch mid-flight.
SLOW = {
    "lifecycle": {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 50, "high": 150}},
    "outcomes": {"failed": 0.0},
}


def kind_args(kind: str) -> list[str]:
    return ["--model", "gpt-5-mini"] if kind == "responses" else ["--assistant", "asst_batch"]


def with_ids(journal: Path) -> int:
    states = journal_states(journal)
    return states.get("running", 0) + states.get("done", 0)


def assert_each_once(out: Path, count: int) -> list[dict[str, object]]:
    lines = read_output(out)
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)), "an item was written twice"
    assert sorted(ids, key=str) == sorted((f"item{i}" for i in range(count)), key=str)
    return lines


@pytest.mark.parametrize("kind", KINDS_SOAK)
async def test_kill_9_mid_batch_resumes_without_recreating_a_run(
    start_sim: StartSim, tmp_path: Path, kind: str
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    async with start_sim(SLOW) as sim:
        args = [str(inp), "--out", str(out), *kind_args(kind), *on(sim)]
        proc = await spawn(args)
        try:
            await until(lambda: with_ids(journal) == 30)
        finally:
            proc.kill()
            await finish(proc)
        assert journal_states(journal).get("running", 0) > 0  # it died with runs in flight
        resumed = await batch(args)
        stats = sim.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert creates(stats) == 30  # every run in flight was re-attached, none created again
    lines = assert_each_once(out, 30)
    assert all(r["status"] == "completed" for r in lines)
    assert any(r["resumed"] for r in lines)
    assert not any(r["recreated"] for r in lines)


@pytest.mark.parametrize("kind", KINDS_SOAK)
async def test_kill_9_in_the_middle_of_tool_rounds_resumes_and_completes(
    start_sim: StartSim, tmp_path: Path, kind: str
) -> None:
    """A re-attached run that asks for tools is answered like any other (its chain goes on)."""
    scenario = {
        **SLOW,
        "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 1, "names": ["get_weather"]},
        # An Assistants run waiting on tools expires after 600 scenario s by default: 6 s of
        # this test's time, which a loaded machine can spend before the resumed batch polls.
        "lifecycle": {"queued": 1.0, "in_progress": 40, "resume": 40, "expires_after": 60_000},
    }
    inp = write_items(tmp_path / "in.jsonl", 12)
    out = tmp_path / "out.jsonl"
    tools = ["--tools", "examples/tools_example.py:TOOLS"]
    async with start_sim(scenario) as sim:
        args = [str(inp), "--out", str(out), *kind_args(kind), *on(sim), *tools]
        proc = await spawn(args)
        try:
            await until(
                lambda: (
                    sim.stats()["requests"].get("runs.submit_tool_outputs", 0) > 0
                    or sim.stats()["requests"].get("responses.create", 0) > 12
                )
            )
        finally:
            proc.kill()
            await finish(proc)
        resumed = await batch(args)
    lines = assert_each_once(out, 12)
    assert resumed.returncode == 0, [(r["status"], r.get("error")) for r in lines]
    assert all(r["status"] == "completed" for r in lines), [
        (r["status"], r.get("error")) for r in lines
    ]


@pytest.mark.parametrize(
    ("sig", "status", "said"),
    [
        pytest.param(signal.SIGINT, 130, "interrupted", id="ctrl-c", marks=pytest.mark.soak),
        # What a container runtime or systemd sends: the same graceful stop, its own status.
        pytest.param(signal.SIGTERM, 143, "stopped by SIGTERM", id="sigterm"),
    ],
)
async def test_a_stop_signal_finishes_in_flight_runs_and_exits_with_a_hint(
    start_sim: StartSim, tmp_path: Path, sig: signal.Signals, status: int, said: str
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 24)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    async with start_sim(SLOW) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim)]
        proc = await spawn([*args, "--max-in-flight", "6"])
        await until(lambda: with_ids(journal) >= 6)
        proc.send_signal(sig)
        stopped = await finish(proc)
        states = journal_states(journal)
        assert stopped.returncode == status, stopped.stderr
        assert f"runfleet batch: stopping ({sig.name}): no new items;" in stopped.stderr
        assert stopped.stderr.strip().splitlines()[-1] == (
            f"runfleet batch: {said}; run the same command again to resume (journal: {journal})"
        )
        assert states.get("running", 0) == 0  # in-flight runs finished within the grace
        assert "submitting" not in states  # nothing journaled that was then not sent
        assert 6 <= states["done"] < 24  # nothing new was started after Ctrl-C
        assert len(read_output(out)) == states["done"]
        # The last progress line's ETA was for the runs in flight, not the 18 left unstarted.
        assert "ETA 0s (stopping)" in stopped.stderr
        resumed = await batch(args)
        stats = sim.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert creates(stats) == 24
    assert_each_once(out, 24)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(signal.SIGINT, signal.SIGINT, id="ctrl-c twice", marks=pytest.mark.soak),
        pytest.param(signal.SIGTERM, signal.SIGTERM, id="sigterm twice"),
    ],
)
async def test_a_second_stop_signal_stops_now_and_leaves_a_consistent_journal(
    start_sim: StartSim, tmp_path: Path, first: signal.Signals, second: signal.Signals
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    slower = {**SLOW, "lifecycle": {"queued": 1.0, "in_progress": 300}}
    async with start_sim(slower) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim)]
        proc = await spawn(args)
        await until(lambda: with_ids(journal) == 20)
        proc.send_signal(first)
        assert proc.stderr is not None
        line = await proc.stderr.readline()
        while line and b"stopping" not in line:  # the first signal was seen: now the second
            line = await proc.stderr.readline()
        assert line, "it ended without saying it was stopping"
        proc.send_signal(second)
        stopped = await finish(proc)
        assert stopped.returncode == 128 + first
        assert journal_states(journal) == {"running": 20}  # every id is there to re-attach
        assert "20 handed back" in stopped.stdout
        resumed = await batch(args)
        stats = sim.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert creates(stats) == 20
    assert_each_once(out, 20)


async def test_a_response_gone_on_resume_is_recreated_once_and_marked(
    start_sim: StartSim, tmp_path: Path
) -> None:
    # Responses are kept 100 scenario seconds here (1 s of the test's time); runs take 50.
    scenario = {
        "lifecycle": {"queued": 1.0, "in_progress": 50, "response_ttl": 100},
        "outcomes": {"failed": 0.0},
    }
    inp = write_items(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    async with start_sim(scenario) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim)]
        proc = await spawn(args)
        try:
            await until(lambda: with_ids(journal) == 10)
        finally:
            proc.kill()
            await finish(proc)
        running = journal_states(journal).get("running", 0)
        gone_at = sim.app.now() + 100
        await until(lambda: sim.app.now() > gone_at)  # the simulator's clock, not a guess
        resumed = await batch(args)
        stats = sim.stats()
    assert resumed.returncode == 0, resumed.stderr
    lines = assert_each_once(out, 10)
    recreated = [r for r in lines if r["recreated"]]
    assert len(recreated) == running > 0
    assert all(r["status"] == "completed" for r in lines)
    assert creates(stats) == 10 + running
    assert f"{running} recreated" in resumed.stdout
    with sqlite3.connect(journal) as db:
        journaled = dict(db.execute("SELECT id, response_id FROM items").fetchall())
    # A recreated run's id was journaled as it appeared, like any run's (a kill re-attaches it).
    assert all(journaled[r["id"]] == r["response_id"] for r in recreated)
