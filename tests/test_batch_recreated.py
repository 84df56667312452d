"""``kill -9`` while creates are on the wire: every item created again on resume says so.

The simulator answers every request half a second late (its ``slow`` fault) and applies a create
even when the client that sent it died meanwhile, as a server does: a batch killed then leaves
first copies behind. Each item the simulator saw created twice (its ``items`` figures, counted
by the ``runfleet_item`` metadata) must be an item whose output line says ``"recreated": true``
with the reason, and the summary and stderr count them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from runfleet.batch.session import MID_CREATE, MID_ROUND
from runfleet.sim import SimServer

from .helpers import StartSim
from .test_batch_support import batch, journal_states, kill_9_when, on, read_output, until
from .test_batch_support import write_items as write

pytestmark = pytest.mark.timeout(180)  # two batch processes each, on a loaded machine
# Every request answered 0.5 s late (50 scenario s x 0.01): creates stay on the wire long
# enough for a kill to land among them.
LATE = {
    "lifecycle": {"queued": 1.0, "in_progress": 50.0, "resume": 50.0},
    "outcomes": {"failed": 0.0},
    "faults": {"slow": 1.0, "slow_delay": 50.0},
}


def prompt(sim: SimServer) -> None:
    """From now on the simulator answers at once (the resumed batch needs no slowness)."""
    scenario = sim.app.scenario
    faults = scenario.faults.model_copy(update={"slow": 0.0})
    sim.app.scenario = scenario.model_copy(update={"faults": faults})


def answering(journal: Path) -> int:
    """Count items whose tool round's new response is on the wire, by the journal."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM items WHERE answering=1").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


async def test_items_killed_mid_create_are_created_again_and_each_is_marked(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write(tmp_path / "in.jsonl", 24)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    async with start_sim(LATE) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", "--max-in-flight", "8", *on(sim)]

        def creating() -> bool:
            # Journaled before sent: eight intents, and at least one create arrived (a kill
            # between the two, seen once on a fresh clone, would leave no first copy).
            arrived = sim.stats()["requests"].get("responses.create", 0)
            return journal_states(journal).get("submitting", 0) >= 8 and arrived >= 1

        await kill_9_when(args, creating, 90)
        on_the_wire = journal_states(journal)["submitting"]
        # The creates the killed batch had sent are applied after it died: wait for them. Not
        # for every one that arrived: one whose body was cut off by the kill is never applied.
        await until(lambda: sim.stats()["open_requests"] == 0, 30)
        prompt(sim)
        resumed = await batch([*args, "--summary-json", str(tmp_path / "s.json")])
        items = sim.stats()["items"]
    assert resumed.returncode == 0, resumed.stderr
    lines = read_output(out)
    assert sorted(r["id"] for r in lines) == sorted(f"item{i}" for i in range(24))
    marked = {r["id"]: r["recreated_reason"] for r in lines if r["recreated"]}
    assert items["repeated"]  # first copies exist...
    assert set(items["repeated"]) <= set(marked)  # ...and each second copy is marked
    assert set(marked.values()) == {MID_CREATE}
    assert len(marked) == on_the_wire
    assert f"{on_the_wire} items stopped while a create was on the wire" in resumed.stderr
    assert f"{on_the_wire} recreated" in resumed.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["items"]["recreated_by_reason"] == {MID_CREATE: on_the_wire}


async def test_items_killed_mid_tool_round_answer_again_and_are_marked(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """A tool round's new response is a create too: its intent is journaled before it goes."""
    scenario = {
        **LATE,
        "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1, "names": ["get_weather"]},
    }
    inp = write(tmp_path / "in.jsonl", 8)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    tools = ["--tools", "examples/tools_example.py:TOOLS"]
    async with start_sim(scenario) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim), *tools]
        await kill_9_when(args, lambda: answering(journal) >= 1, 90)
        mid_round = answering(journal)
        prompt(sim)
        resumed = await batch(args)
        items = sim.stats()["items"]
    assert resumed.returncode == 0, resumed.stderr
    lines = read_output(out)
    assert len(lines) == 8
    marked = {r["id"]: r["recreated_reason"] for r in lines if r["recreated"]}
    assert set(items["refollowed"]) <= set(marked)
    assert [why for why in marked.values() if why == MID_ROUND] == [MID_ROUND] * mid_round
    assert all(r["status"] == "completed" for r in lines)
