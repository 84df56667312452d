"""What a batch tells its user: the whole file's figures, its bad lines, its width, its ETA.

The command runs as a subprocess against the simulator; the summary and progress objects are
also read directly, with figures no small test batch reaches.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from runfleet.admission.token_quota import TokenStats
from runfleet.batch.progress import ProgressState
from runfleet.batch.report import BatchSummary, Tally
from runfleet.stats import StatsCollector

from .helpers import StartSim
from .test_batch_support import batch, on, read_output

FAST = {"lifecycle": {"queued": 0.2, "in_progress": 2.0, "resume": 1.0}}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_rerun_counts_earlier_failures_and_invalid_lines_and_exits_1(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Nothing is sent again, yet the summary and the exit status are the file's, not the run's."""
    items = [json.dumps({"id": f"item{i}", "prompt": f"question {i}"}) for i in range(8)]
    inp = write_lines(tmp_path / "in.jsonl", [*items, "{not json", '{"id": "item0", "p": 1}'])
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    args = [str(inp), "--out", str(out), "--model", "m", "--summary-json", str(summary)]
    async with start_sim({**FAST, "outcomes": {"failed": 0.5}}) as sim:
        first = await batch([*args, *on(sim)])
        again = await batch([*args, *on(sim)])
    statuses = Counter(r["status"] for r in read_output(out))
    failed = statuses["failed"]
    assert 0 < failed < 8, statuses  # the scenario's seed fails some runs, not all
    assert first.returncode == again.returncode == 1, again.stderr
    data = json.loads(summary.read_text())
    assert {k: data["items"][k] for k in ("total", "ok", "failed", "invalid", "already_done")} == {
        "total": 10,
        "ok": 8 - failed,
        "failed": failed,
        "invalid": 2,
        "already_done": 10,
    }
    assert data["this_run"]["ended"] == 0
    assert f"items      10 total: {8 - failed} ok, {failed} failed, 0 timed out, 2 invalid" in (
        again.stdout
    )
    assert "this run   0 ended: 0 ok, 0 failed, 0 timed out, 0 invalid; 10 done before" in (
        again.stdout
    )
    assert max(len(line) for line in again.stdout.splitlines()) <= 80


async def test_invalid_lines_are_named_on_stderr_capped_and_counted_apart(
    start_sim: StartSim, tmp_path: Path
) -> None:
    lines = [
        '{"id": "a", "prompt": "one"}',  # 1
        '{"id": "a", "prompt": "again"}',  # 2: a duplicate of line 1
        *(["{not json"] * 22),  # 3..24
        '{"id": "b", "prompt": "two"}',  # 25
    ]
    inp = write_lines(tmp_path / "in.jsonl", lines)
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    async with start_sim(FAST) as sim:
        done = await batch(
            [str(inp), "--out", str(out), "--model", "m", *on(sim), "--progress", "lines",
             "--summary-json", str(summary)]
        )  # fmt: skip
    assert done.returncode == 1  # invalid lines are items that did not complete
    err = done.stderr.splitlines()
    named = [line for line in err if line.startswith("runfleet batch: skipped ")]
    assert named[0] == "runfleet batch: skipped line 2: duplicate id 'a' (first on line 1)"
    assert named[1].startswith("runfleet batch: skipped line 3: not JSON (")
    assert named[19].startswith("runfleet batch: skipped line 21: not JSON (")
    assert named[20:] == [f"runfleet batch: skipped 3 more invalid lines (each is in {out})"]
    assert "25/25 done, 0 in flight, 0 failed, 23 invalid" in err[-1]
    by_line = {r["line"]: r for r in read_output(out)}
    assert by_line[1]["status"] == by_line[25]["status"] == "completed"
    assert by_line[2]["id"] == "a"
    assert by_line[2]["status"] == "duplicate"
    assert by_line[2]["error"] == {
        "code": "duplicate_id",
        "message": "line 2: duplicate id 'a' (first on line 1)",
    }
    assert by_line[3]["status"] == "invalid"
    data = json.loads(summary.read_text())["items"]
    assert (data["ok"], data["failed"], data["invalid"]) == (2, 0, 23)
    assert data["by_status"] == {"completed": 2, "duplicate": 1, "invalid": 22}
    assert "items      25 total: 2 ok, 0 failed, 0 timed out, 23 invalid" in done.stdout


def _summary(tally: Tally, **kwargs: int) -> BatchSummary:
    stats = StatsCollector()
    for i in range(kwargs.pop("requests", 0)):
        stats.request_started("retrieve", i * 0.01)
    return BatchSummary(
        tally=tally,
        stats=stats.snapshot(100.0, {}, None),
        quota_rpm=kwargs.pop("rpm", 6000),
        wall=25.9,
        handed_back=kwargs.pop("handed_back", 0),
        not_started=kwargs.pop("not_started", 0),
        interrupted=False,
        journal="results.jsonl.journal",
    )


def test_every_summary_line_fits_80_columns() -> None:
    # The README's demo: its "classic" line was 82 columns wide.
    demo = Tally(total=1000, statuses=Counter(completed=987, failed=13))
    demo.classic, demo.classic_items, demo.fleet_for_classic = 7024, 987, 1987
    demo.latencies, demo.detections = [5.0, 5.7], [4.9, 5.5]
    # A big resumed batch, stopped: every optional figure, each with many digits.
    big = Tally(
        total=250_000,
        statuses=Counter(completed=98_765, failed=12_345, timed_out=1_234, invalid=12),
        before=Counter(completed=100_000, failed=10_000, duplicate=3),
        recreated=1_234,
        latencies=[12_345.6, 23_456.7],
        detections=[1_234.5, 2_345.6],
    )
    big.classic, big.classic_items, big.fleet_for_classic = 1_234_567, 98_765, 234_567
    for summary in (
        _summary(demo, requests=2013),
        _summary(big, requests=3000, handed_back=12_345, not_started=15_000, rpm=30_000),
    ):
        text = summary.text()
        assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "classic    ~7024 requests (estimate) for these 987 items; 1987 here, 72% fewer" in (
        _summary(demo).text()
    )


def test_the_peak_is_the_busiest_window_and_second_against_the_share() -> None:
    """22 requests within a minute: the peak is all of them, however they were sampled."""
    text = _summary(Tally(total=22), requests=22, rpm=600).text()
    assert "peak       22 requests/min (quota 600); busiest second 22 (share 10)" in text


def test_while_stopping_the_eta_is_for_the_runs_in_flight_only() -> None:
    running = ProgressState(
        total=1000, done=310, in_flight=20, failed=1, rpm=0, quota=600, elapsed=10.0,
        invalid=2, ended=10,
    )  # fmt: skip
    assert running.line().endswith("1 failed, 2 invalid, 0/600 requests/min, ETA 690s")
    # 300 items done by an earlier session do not make this one look thirty times faster.
    stopping = ProgressState(
        total=1000, done=310, in_flight=20, failed=1, rpm=0, quota=600, elapsed=10.0,
        invalid=2, ended=10, grace_left=60.0,
    )  # fmt: skip
    assert stopping.line().endswith("ETA 20s (stopping)")  # 20 in flight at 1 s an item
    late = ProgressState(
        total=1000, done=310, in_flight=20, failed=1, rpm=0, quota=600, elapsed=10.0,
        ended=10, grace_left=4.2,
    )  # fmt: skip
    assert late.line().endswith("ETA 5s (stopping)")  # the grace ends first


def test_token_figures_are_in_the_summary_its_json_and_the_progress_line() -> None:
    """A big token batch: used, per minute, peak against the limit, token 429s; 80 columns."""
    tokens = TokenStats(
        tpm=None, server_limit=400_000_000.0, limit=400_000_000.0, last_minute=0.0,
        peak_window=399_876_543.2, charged=9_876_543_210, given_back=1_234_567.8,
        used=9_765_432_109, waiting=0, paused_for=0.0, rate_limited=12_345, too_large=7,
        ratios={}, used_last_minute=1_000.0, used_peak_window=388_765_432.1,
    )  # fmt: skip
    summary = _summary(Tally(total=250_000), requests=3000, rpm=30_000)
    assert summary.data()["tokens"] is None  # spent none: nothing to report
    assert summary.stats is not None
    summary = dataclasses.replace(summary, stats=dataclasses.replace(summary.stats, tokens=tokens))
    data = summary.data()["tokens"]
    assert data["used"] == 9_765_432_109
    assert data["per_minute"] == round(9_765_432_109 / 60 * 60)  # 25.9 s: all in one minute
    assert data["used_peak_per_minute"] == 388_765_432
    assert (data["reserved_peak_per_minute"], data["limit"]) == (399_876_543, 400_000_000.0)
    assert (data["rate_limited"], data["too_large"]) == (12_345, 7)
    text = summary.text()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "(12345 on tokens)" in text
    assert "9765432109 used, 9765432109/min of 400000000 on average" in text
    assert "reserved at most 399876543 in a minute" in text
    long = dataclasses.replace(summary, wall=600.0)
    assert long.data()["tokens"]["per_minute"] == round(9_765_432_109 / 10)
    state = ProgressState(
        total=10, done=1, in_flight=2, failed=0, rpm=5, quota=600, elapsed=1.0,
        tpm=31_000, token_limit=40_000,
    )  # fmt: skip
    assert "5/600 requests/min, 31000/40000 tokens/min, ETA" in state.line()
    unlimited = dataclasses.replace(state, token_limit=None)
    assert "tokens" not in unlimited.line()
