"""``runfleet batch`` end to end: a real subprocess against the simulator, a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import API_KEY, StartSim
from .test_batch_support import batch, creates, on, read_output, write_items

KINDS = ["responses", "assistants"]
FAST = {"lifecycle": {"queued": 0.2, "in_progress": 2.0, "resume": 1.0}}


def kind_args(kind: str) -> list[str]:
    return ["--model", "gpt-5-mini"] if kind == "responses" else ["--assistant", "asst_batch"]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_item_completes_once_with_rpm_learned_from_headers(
    start_sim: StartSim, tmp_path: Path, kind: str
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 20)
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    async with start_sim(FAST) as sim:
        done = await batch(
            [str(inp), "--out", str(out), *kind_args(kind), *on(sim),
             "--summary-json", str(summary), "--progress", "lines"]
        )  # fmt: skip
        stats = sim.stats()
        header_rpm = sim.app.scenario.quota.rpm / sim.app.scenario.time_scale
    assert done.returncode == 0, done.stderr
    lines = read_output(out)
    assert sorted(r["id"] for r in lines) == sorted(f"item{i}" for i in range(20))
    for r in lines:
        assert r["status"] == "completed"
        assert r["kind"] == kind
        assert r["text"] == f"Simulated reply to: question {r['id'].removeprefix('item')}"
        assert r["error"] is None
        assert r["figures"]["polls"] >= 1
        assert r["figures"]["requests"] >= r["figures"]["polls"] + 1
    assert creates(stats) == 20
    data = json.loads(summary.read_text())
    assert data["items"]["ok"] == 20
    assert data["requests"]["total"] == stats["requests_total"] - 1  # all but the probe
    assert data["requests"]["quota_rpm"] == pytest.approx(header_rpm)  # learned
    assert data["classic_estimate"]["requests"] > 0
    # Shorter than a minute: its busiest minute is all of it, counted, not sampled.
    assert data["requests"]["peak_per_minute"] == data["requests"]["total"]
    assert 0 < data["requests"]["peak_per_second"] <= data["requests"]["total"]
    assert "items      20 total: 20 ok" in done.stdout
    assert "20/20 done" in done.stderr  # plain progress lines when not on a terminal
    assert API_KEY not in done.stderr + done.stdout


async def test_a_run_past_its_timeout_is_cancelled_and_reported(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 3)
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    slow = {"lifecycle": {"queued": 0.1, "in_progress": 3000}}  # 30 s of the test's time
    async with start_sim(slow) as sim:
        done = await batch(
            [str(inp), "--out", str(out), "--model", "m", *on(sim), "--timeout", "0.3",
             "--summary-json", str(summary)]
        )  # fmt: skip
        stats = sim.stats()
    assert done.returncode == 1
    for r in read_output(out):
        assert r["status"] == "timed_out"
        assert r["error"]["code"] == "timed_out"
        assert r["response_id"].startswith("resp_")
    assert stats["requests"]["responses.cancel"] == 3  # cancelled on the server, not abandoned
    assert json.loads(summary.read_text())["items"]["timed_out"] == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_rounds_are_answered_by_the_tools_module(
    start_sim: StartSim, tmp_path: Path, kind: str
) -> None:
    scenario = {
        **FAST,
        "tools": {"probability": 1.0, "rounds": 1, "calls_per_round": 1, "names": ["get_weather"]},
    }
    inp = write_items(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"
    async with start_sim(scenario) as sim:
        done = await batch(
            [str(inp), "--out", str(out), *kind_args(kind), *on(sim),
             "--tools", "examples/tools_example.py:TOOLS"]
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for r in read_output(out):
        assert r["status"] == "completed"
        assert len(r["tool_rounds"]) == 1
        (call,) = r["tool_rounds"][0]
        # The simulator calls the tools the request declares: both of the module's.
        if call["name"] == "get_weather":
            assert call["output"].startswith("sunny and 21 C in ")
        else:
            assert json.loads(call["output"])["state"] == "shipped"


async def test_bad_lines_are_reported_with_their_line_numbers_and_the_rest_proceed(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b'{"id": "a", "prompt": "one"}\n'  # 1 ok
        b"{not json\n"  # 2
        b'{"id": "b"}\n'  # 3 no prompt
        b'{"id": "a", "prompt": "again"}\n'  # 4 duplicate id
        b'{"id": "c", "prompt": "caf\xe9"}\n'  # 5 not UTF-8
        b"\n"  # blank lines are skipped
        b"[1, 2]\n"  # 7 not an object
        b'{"prompt": "no id: the line number is the id"}\n'  # 8 ok, id "8"
    )
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    async with start_sim(FAST) as sim:
        done = await batch(
            [str(inp), "--out", str(out), "--model", "m", *on(sim),
             "--summary-json", str(summary)]
        )  # fmt: skip
        stats = sim.stats()
    assert done.returncode == 1  # not every item completed
    by_line = {r["line"]: r for r in read_output(out)}
    assert sorted(by_line) == [1, 2, 3, 4, 5, 7, 8]
    assert by_line[1]["status"] == by_line[8]["status"] == "completed"
    assert by_line[8]["id"] == "8"
    invalid = {n: by_line[n]["error"]["message"] for n in (2, 3, 4, 5, 7)}
    assert all(by_line[n]["status"] == "invalid" for n in invalid if n != 4)
    assert by_line[4]["status"] == "duplicate"
    assert "line 2: not JSON" in invalid[2]
    assert "line 3: missing 'prompt'" in invalid[3]
    assert "line 4: duplicate id 'a' (first on line 1)" in invalid[4]
    assert "line 5: not UTF-8" in invalid[5]
    assert "line 7: expected a JSON object" in invalid[7]
    assert creates(stats) == 2
    assert json.loads(summary.read_text())["items"]["invalid"] == 5


async def test_strict_refuses_the_whole_file_before_sending_anything(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "prompt": "one"}\n{"id": "b"}\n')
    async with start_sim(FAST) as sim:
        done = await batch(
            [str(inp), "--out", str(tmp_path / "o.jsonl"), "--model", "m",
             *on(sim), "--strict"]
        )  # fmt: skip
        stats = sim.stats()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"runfleet batch: {inp}: 1 invalid line(s), nothing sent "
        "(first: line 2: missing 'prompt' (a non-empty string))"
    ]
    assert stats["requests_total"] == 0


@pytest.mark.parametrize("content", ["", "\n  \n"])
async def test_an_empty_file_is_one_line_and_exit_2_leaving_no_files(
    start_sim: StartSim, tmp_path: Path, content: str
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(content)
    out = tmp_path / "o.jsonl"
    async with start_sim(FAST) as sim:
        done = await batch([str(inp), "--out", str(out), "--model", "m", *on(sim)])
        stats = sim.stats()
    assert done.returncode == 2  # nothing could start
    assert done.stderr.strip() == (
        f"runfleet batch: {inp}: no items (the file is empty or blank), nothing sent"
    )
    assert not out.exists()
    assert not (tmp_path / "o.jsonl.journal").exists()
    assert stats["requests_total"] == 0


async def test_a_missing_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 1)
    done = await batch([str(inp), "--out", str(tmp_path / "o.jsonl"), "--model", "m"], api_key=None)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "runfleet batch: no API key: set OPENAI_API_KEY (or use --sim SCENARIO)"
    )


async def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 1)
    out = tmp_path / "o.jsonl"
    done = await batch(
        [str(inp), "--out", str(out), "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]
    )
    assert done.returncode == 2
    assert done.stderr.startswith("runfleet batch: cannot reach http://127.0.0.1:9/v1/")
    assert len(done.stderr.strip().splitlines()) == 1


async def test_a_refused_key_is_one_line_without_the_key(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 1)
    async with start_sim(FAST, api_key="sk-the-only-good-key") as sim:
        done = await batch(
            [str(inp), "--out", str(tmp_path / "o.jsonl"), "--model", "m",
             *on(sim)]
        )  # fmt: skip
        stats = sim.stats()
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"runfleet batch: the server refused the API key ...{API_KEY[-4:]} (HTTP 401)"
    )
    assert API_KEY not in done.stderr + done.stdout
    assert creates(stats) == 0


async def test_an_unwritable_output_is_refused_before_starting(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 1)
    async with start_sim(FAST) as sim:
        done = await batch(
            [str(inp), "--out", str(tmp_path / "no" / "such" / "dir.jsonl"), "--model", "m",
             *on(sim)]
        )  # fmt: skip
        stats = sim.stats()
    assert done.returncode == 2
    assert "runfleet batch: cannot write" in done.stderr
    assert stats["requests_total"] == 0


async def test_sim_flag_runs_the_simulator_in_process(tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 30)
    out = tmp_path / "o.jsonl"
    done = await batch(
        [str(inp), "--out", str(out), "--model", "m", "--sim", "tools",
         "--sim-time-scale", "0.01", "--tools", "examples/tools_example.py:TOOLS"],
        api_key=None,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # the scenario fails a few runs by design
    lines = read_output(out)
    assert len({r["id"] for r in lines}) == len(lines) == 30
    assert any(r["tool_rounds"] for r in lines)


async def test_a_finished_batch_run_again_sends_nothing(
    start_sim: StartSim, tmp_path: Path
) -> None:
    inp = write_items(tmp_path / "in.jsonl", 10)
    out = tmp_path / "o.jsonl"
    args = [str(inp), "--out", str(out), "--model", "m"]
    async with start_sim(FAST) as sim:
        first = await batch([*args, *on(sim)])
        before = sim.stats()
        again = await batch([*args, *on(sim)])
        after = sim.stats()
    assert first.returncode == again.returncode == 0
    assert creates(after) == creates(before) == 10
    assert after["requests_total"] == before["requests_total"] + 1  # the probe only
    assert len(read_output(out)) == 10
    assert "10 done before" in again.stdout


async def test_help_explains_each_option() -> None:
    done = await batch(["--help"])
    assert done.returncode == 0
    for option in (
        "--out", "--model", "--assistant", "--rpm", "--max-in-flight", "--timeout", "--tools",
        "--base-url", "--sim", "--journal", "--summary-json", "--strict",
    ):  # fmt: skip
        assert option in done.stdout


@pytest.mark.parametrize("kind", KINDS)
async def test_items_created_twice_after_an_ambiguous_create_are_marked_with_why(
    start_sim: StartSim, tmp_path: Path, kind: str
) -> None:
    """The server counts creates per item (from metadata); each item it saw twice says so."""
    inp = write_items(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    faults = {"malformed": 0.3, "bad_bodies_on": ["create"]}
    async with start_sim({**FAST, "faults": faults}) as sim:
        done = await batch([str(inp), "--out", str(out), *kind_args(kind), *on(sim)])
        items = sim.stats()["items"]
    assert done.returncode == 0, done.stderr
    lines = read_output(out)
    assert all(r["status"] == "completed" for r in lines)
    recreated = {r["id"]: r["recreated_reason"] for r in lines if r["recreated"]}
    assert items["created"] == 20
    assert set(items["repeated"]) == set(recreated) != set()
    assert set(recreated.values()) == {"unreadable answer"}
