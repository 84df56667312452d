"""``runfleet batch --completion-window``: discounted runs, their discount stated, and a batch
that waits in the ``8h`` window resumed from its journal alone, in another directory, by a
fresh process (another machine, days later: the responses are stored, ``store=True``)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from runfleet.batch.preflight import BatchConfig, BatchError, run_batch
from runfleet.sim import SimServer

from . import test_batch_support as support
from .helpers import API_KEY, StartSim
from .test_batch_support import batch, read_output, write_items

SCALE = 0.0002  # scenario seconds to real ones: the 8h window lasts 5.8 s
EIGHT_HOURS: dict[str, Any] = {
    "lifecycle": {"queued": 1.0, "in_progress": 60, "resume": 60},
    # The first responses queue 5.5 h (4 s here): the first process is stopped well before.
    "windows": {"8h": {"queued": 20000, "follow_up": 600}, "2h": {"queued": 1200}},
    "outcomes": {"failed": 0.0},
    "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1, "names": ["get_weather"]},
}
TOOLS = ["--tools", "examples/tools_example.py:TOOLS"]


async def test_an_8h_batch_resumes_from_its_journal_copied_elsewhere_keeping_its_window(
    start_sim: StartSim, tmp_path: Path
) -> None:
    first, second = tmp_path / "laptop", tmp_path / "server"
    first.mkdir()
    second.mkdir()
    write_items(first / "in.jsonl", 8)
    async with start_sim(EIGHT_HOURS, time_scale=SCALE) as sim:

        def args(where: Path) -> list[str]:
            out = ["--out", str(where / "out.jsonl"), "--model", "gpt-5-mini", *support.on(sim)]
            return [str(where / "in.jsonl"), *out, "--completion-window", "8h", *TOOLS]

        proc = await support.spawn([*args(first), "--grace", "0.01"])
        journal = first / "out.jsonl.journal"
        await support.until(lambda: support.journal_states(journal) == {"running": 8})
        proc.send_signal(signal.SIGTERM)  # the laptop closes: every run is handed back
        stopped = await support.finish(proc)
        assert stopped.returncode == 143, stopped.stderr
        # The journal file alone (no -wal beside it) carries the batch to the other machine.
        for name in ("in.jsonl", "out.jsonl", "out.jsonl.journal"):
            shutil.copy(first / name, second / name)
        resumed = await batch(args(second))
        stats = sim.stats()
    lines = read_output(second / "out.jsonl")
    assert resumed.returncode == 0, resumed.stderr
    assert support.creates(stats) == 16, lines  # 8 runs created once, each with one tool round
    windows = stats["responses"]["windows"]
    assert set(windows) == {"8h"}
    # Each round reused the continuation id the first process sent: the journal kept it.
    assert windows["8h"]["follow_ups"] == 8
    assert len(lines) == 8
    assert all(r["status"] == "completed" and r["resumed"] for r in lines)
    assert all(r["completion_window"] == "8h" for r in lines)
    tokens = sum(r["usage"]["total_tokens"] for r in lines)
    assert "tokens in 8h at 40% off" in resumed.stdout
    assert f"the Standard price of {round(tokens * 0.4)} tokens saved" in " ".join(
        resumed.stdout.split()
    )


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(sim: SimServer, inp: Path, **kwargs: Any) -> BatchConfig:
    """A batch run in this process against ``sim`` (its time scale included)."""
    kwargs.setdefault("model", "gpt-5-mini")
    return BatchConfig(
        input=inp, out=inp.with_name("out.jsonl"), api_key=API_KEY, base_url=sim.base_url,
        sim_time_scale=sim.app.scenario.time_scale, progress="off", **kwargs,
    )  # fmt: skip


async def test_a_line_window_wins_and_the_summary_states_the_discount(
    start_sim: StartSim, tmp_path: Path
) -> None:
    rows = [{"id": "a", "prompt": "x", "completion_window": "2h"}, {"id": "b", "prompt": "y"}]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    no_tools = EIGHT_HOURS | {"tools": {"probability": 0.0}}
    async with start_sim(no_tools, time_scale=SCALE) as sim:
        summary = await run_batch(config(sim, inp, completion_window="8h"))
        windows = sim.stats()["responses"]["windows"]
    assert summary.ok
    assert (windows["2h"]["total"], windows["8h"]["total"]) == (1, 1)
    lines = {r["id"]: r for r in read_output(tmp_path / "out.jsonl")}
    assert (lines["a"]["completion_window"], lines["b"]["completion_window"]) == ("2h", "8h")
    discount = summary.data()["discount"]
    assert discount["by_window"]["2h"]["tokens"] == lines["a"]["usage"]["total_tokens"]
    assert discount["by_window"]["8h"]["off"] == 0.4
    assert discount["tokens"] == sum(r["usage"]["total_tokens"] for r in lines.values())
    assert "usage.total_tokens" in discount["how"]
    assert "discount   " in summary.text()


async def test_a_window_on_an_assistants_batch_is_one_line_and_exit_2(tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    args = [str(inp), "--out", str(out), "--assistant", "asst_1", "--completion-window", "8h"]
    done = await batch([*args, "--sim", "ample"])
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "runfleet batch: --completion-window is for background responses (--model), not runs"
    )
    assert not out.exists()


async def test_an_unknown_window_refuses_the_batch_before_anything_is_sent(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 1)
    async with start_sim({}) as sim:
        with pytest.raises(BatchError, match="--completion-window must be one of soonest, 2h"):
            await run_batch(config(sim, inp, completion_window="3h"))
        assert sim.stats()["requests"] == {}
    assert not (tmp_path / "out.jsonl").exists()


async def test_bad_windows_on_lines_are_invalid_lines_and_the_rest_runs(
    start_sim: StartSim, tmp_path: Path
) -> None:
    rows = [{"id": "a", "prompt": "x", "completion_window": "24h"}, {"id": "b", "prompt": "y"}]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    async with start_sim({"outcomes": {"failed": 0.0}}, time_scale=0.01) as sim:
        responses = await run_batch(config(sim, inp))
        bad = read_output(tmp_path / "out.jsonl")[0]
        rows[0]["completion_window"] = "8h"
        write_rows(inp, rows)
        runs = await run_batch(config(sim, inp, model=None, assistant="asst_1", fresh=True))
    assert bad["error"]["message"] == "line 1: 'completion_window' must be one of soonest, 2h, 8h"
    assert (responses.tally.invalid, runs.tally.invalid) == (1, 1)
    assert {r["id"]: r["status"] for r in read_output(tmp_path / "out.jsonl")} == {
        "a": "invalid",
        "b": "completed",
    }
    why = read_output(tmp_path / "out.jsonl")[0]["error"]["message"]
    assert (
        why
        == "line 1: 'completion_window' is for background responses (--model), not Assistants runs"
    )


async def test_resuming_with_another_window_is_refused(start_sim: StartSim, tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 2)
    async with start_sim({"outcomes": {"failed": 0.0}}, time_scale=0.01) as sim:
        assert (await run_batch(config(sim, inp))).ok
        with pytest.raises(BatchError, match=r"written for another batch \(window differs\)"):
            await run_batch(config(sim, inp, completion_window="2h"))
