"""A batch split over separate OS processes with ``--shard K/N``, merged with ``runfleet merge``.

Each shard is its own ``runfleet batch`` process against one simulator in the test process; the
merged output must hold every input line exactly once. A shard killed with ``kill -9`` is rerun
from its journal moved to another directory ("another host") and re-attaches its runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis.asyncio as aredis

from runfleet.batch.files import read_items
from runfleet.batch.shards import Shard, merge_outputs
from runfleet.cli import main

from . import test_batch_support as support
from .helpers import StartSim
from .test_batch_resume import with_ids

SLOW = {
    "lifecycle": {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 50, "high": 150}},
    "outcomes": {"failed": 0.0},
}
QUICK = {"lifecycle": {"queued": 0.5, "in_progress": {"dist": "uniform", "low": 5, "high": 30}}}
MERGE = [sys.executable, "-m", "runfleet.cli", "merge"]


@pytest.mark.parametrize("spec", ["3/2", "0/0", "a/b", "1/0", "0/3", "2", "-1/2", "1/3/4"])
def test_a_bad_shard_spec_is_refused_in_one_line(
    spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="K/N"):
        Shard.parse(spec)
    inp = support.write_items(tmp_path / "in.jsonl", 3)
    out = tmp_path / "o.jsonl"
    with pytest.raises(SystemExit) as exited:
        main(["batch", str(inp), "--out", str(out), "--model", "m", f"--shard={spec}"])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert "--shard" in errors[0]
    assert "K/N" in errors[0]
    assert not out.exists()


def test_every_id_belongs_to_exactly_one_shard_the_same_on_every_host() -> None:
    ids = [f"item{i}" for i in range(3000)]
    shards = [Shard(k, 3) for k in (1, 2, 3)]
    owners = [[s.index for s in shards if s.owns(i)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(o == [k] for o in owners) for k in (1, 2, 3)]
    assert min(sizes) > 900  # an even split, not one shard taking everything
    # A digest, not Python's salted hash(): another interpreter splits the same way.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from runfleet.batch.shards import Shard;"
            "print(''.join('1' if Shard(2, 3).owns(f'item{i}') else '0' for i in range(3000)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert other.stdout.strip() == "".join("1" if o == [2] else "0" for o in owners)
    assert Shard(1, 3).output(Path("res/out.jsonl")) == Path("res/out.1of3.jsonl")


def test_merge_keeps_each_line_once_and_names_the_missing_and_twice_seen(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"i{n}", "prompt": "p"}) + "\n" for n in range(4)))
    one, two = tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    def line(n: int) -> str:
        return json.dumps({"id": f"i{n}", "line": n + 1, "status": "completed"}) + "\n"

    one.write_text(line(2) + line(0))
    two.write_text(line(0) + line(1) + '{"id": "i3", "li')  # a torn last line
    report = merge_outputs(tmp_path / "all.jsonl", [one, two], input=inp)
    merged = support.read_output(tmp_path / "all.jsonl")
    assert [r["id"] for r in merged] == ["i0", "i1", "i2"]  # input order, i0 once
    assert report.duplicates == [("i0", 1)]
    assert report.missing == [("i3", 4)]
    assert report.torn == 1
    assert not report.ok
    with pytest.raises(ValueError, match="one of the shard outputs"):
        merge_outputs(one, [one, two])


async def run_shards(
    start_sim: StartSim,
    tmp_path: Path,
    count: int,
    scenario: Mapping[str, object],
    redis_url: str | None = None,
) -> None:
    """Three shard processes (sharing the account's limits if given a Redis), then the merge."""
    inp = support.write_items(tmp_path / "in.jsonl", count)
    out = tmp_path / "out.jsonl"
    shared = [] if redis_url is None else ["--redis", redis_url, "--account", "shards"]
    async with start_sim(scenario) as sim:
        base = [str(inp), "--out", str(out), "--model", "gpt-5-mini", *support.on(sim), *shared]
        procs = [await support.spawn([*base, "--shard", f"{k}/3"]) for k in (1, 2, 3)]
        done = [await support.finish(p, within=540) for p in procs]
        stats = sim.stats()
    assert [d.returncode for d in done] == [0, 0, 0], [d.stderr[-500:] for d in done]
    assert support.creates(stats) == count  # each item created by exactly one shard
    if redis_url is not None:
        assert stats["rate_limited"] == 0
        async with aredis.Redis.from_url(redis_url) as r:  # the shards spent one account
            assert await r.exists("runfleet:{shards}:limits")
    parts = [tmp_path / f"out.{k}of3.jsonl" for k in (1, 2, 3)]
    assert all(len(support.read_output(p)) > count // 5 for p in parts)  # each did its share
    merge = await asyncio.create_subprocess_exec(
        *MERGE, str(tmp_path / "all.jsonl"), *map(str, parts), "--input", str(inp),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=support.ROOT,
    )  # fmt: skip
    merged = await support.finish(merge)
    assert merged.returncode == 0, merged.stderr
    assert "lines merged" in merged.stdout
    lines = support.read_output(tmp_path / "all.jsonl")
    assert [r["id"] for r in lines] == [i.id for i in read_items(inp).items]
    assert all(r["status"] == "completed" for r in lines)


@pytest.mark.soak  # make test stays in its budget; make soak runs it
@pytest.mark.timeout(180)  # three interpreters starting at once on a loaded 2-core box
async def test_three_shard_processes_finish_a_file_with_each_item_once(
    start_sim: StartSim, tmp_path: Path
) -> None:
    await run_shards(start_sim, tmp_path, 90, QUICK)


@pytest.mark.processes  # with make test-processes: several processes on one Redis
@pytest.mark.timeout(600)
async def test_three_shard_processes_on_one_redis_finish_3000_items_with_each_item_once(
    start_sim: StartSim, tmp_path: Path, redis_url: str
) -> None:
    await run_shards(start_sim, tmp_path, 3000, QUICK, redis_url)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "shared", [False, pytest.param(True, marks=pytest.mark.processes)], ids=["alone", "redis"]
)
async def test_a_shard_killed_with_kill_9_reruns_elsewhere_and_reattaches(
    start_sim: StartSim, tmp_path: Path, request: pytest.FixtureRequest, shared: bool
) -> None:
    redis = ["--redis", request.getfixturevalue("redis_url")] if shared else []
    inp = support.write_items(tmp_path / "in.jsonl", 60)
    here, elsewhere = tmp_path / "host-a", tmp_path / "host-b"
    here.mkdir()
    elsewhere.mkdir()
    ours = [i for i in read_items(inp).items if Shard(2, 3).owns(i.id)]
    journal = here / "out.2of3.jsonl.journal"
    async with start_sim(SLOW) as sim:
        args = ["--model", "gpt-5-mini", *support.on(sim), "--shard", "2/3", *redis]
        proc = await support.spawn([str(inp), "--out", str(here / "out.jsonl"), *args])
        try:
            # Every item has its run id journaled, and some still run: none is on the wire.
            await support.until(lambda: with_ids(journal) == len(ours), within=60)
        finally:
            proc.kill()
            await support.finish(proc)
        assert support.journal_states(journal).get("running", 0) > 0  # it died with runs in flight
        # Another host: the shard's output and journal (with SQLite's sides) copied there.
        for path in here.iterdir():
            shutil.copy2(path, elsewhere / path.name)
        rerun = await support.batch([str(inp), "--out", str(elsewhere / "out.jsonl"), *args])
        made = support.creates(sim.stats())
    assert rerun.returncode == 0, rerun.stderr
    lines = support.read_output(elsewhere / "out.2of3.jsonl")
    assert sorted(r["id"] for r in lines) == sorted(i.id for i in ours)
    assert made == len(ours)  # the runs in flight at the kill were re-attached, not created
    assert any(r["resumed"] for r in lines)
    assert not any(r["recreated"] for r in lines)


def test_merge_on_the_command_line_exits_by_what_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = support.write_items(tmp_path / "in.jsonl", 2)
    part = tmp_path / "out.1of2.jsonl"
    part.write_text(json.dumps({"id": "item0", "line": 1, "status": "completed"}) + "\n")
    assert main(["merge", str(tmp_path / "all.jsonl"), str(part)]) == 0
    assert capsys.readouterr().out == "runfleet merge: 1 line merged\n"
    assert main(["merge", str(tmp_path / "all.jsonl"), str(part), "--input", str(inp)]) == 1
    assert capsys.readouterr().err == (
        "runfleet merge: 1 line merged; 1 missing (first: 'item1' (line 2))\n"
    )
    assert main(["merge", str(tmp_path / "all.jsonl"), str(tmp_path / "nope.jsonl")]) == 2
    assert (
        capsys.readouterr().err
        == f"runfleet merge: {tmp_path / 'nope.jsonl'}: No such file or directory\n"
    )
