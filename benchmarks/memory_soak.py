"""Does the fleet's memory level off with N runs in flight, or grow with every poll?

    .venv/bin/python benchmarks/memory_soak.py --in-flight 3000 --polls 200000

The simulator runs in a child process (``runfleet sim``, as ``fleet_scale.py`` starts it), so
this process holds only the fleet, the SDK and the benchmark. One ``AsyncOpenAI`` and one
``Fleet(client, rpm=--rpm)``; a feeder keeps ``--in-flight`` runs in flight: each run's end
starts the next, and no handle is kept once it ended. Runs are long (queued 1 s, then in
progress 60-120 s uniform at time scale 1), so the quota goes mostly to polls; 1 % fail as
planned.

Every ``--every`` seconds it samples RSS (``VmRSS`` in ``/proc/self/status``), the bytes
``tracemalloc`` traces (after a full collection, so garbage awaiting one does not count), and
the fleet's retrieves. From ``--warmup`` polls on it prints:

- the slope: a least-squares line through the samples after warm-up, in MB of RSS and of
  traced memory per 10,000 polls;
- the allocation sites that grew most from the first snapshot to a second half-way and a third
  at the end, in each half (``--top``, by file and line; ``--frames`` deepens the traceback
  each site is grouped by, at more cost): a leak grows in both halves, a warm-up in the first;
- the entries of the fleet's own structures (heap, run table, windows, ledger, indexes) at the
  three points.

``--no-tracemalloc`` measures RSS alone, for the RSS figure to quote: tracemalloc keeps a trace
per live block (tens of MB here), the allocator keeps the arenas each snapshot took (RSS steps
up there), and it slows each poll.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from runfleet import Fleet, RunHandle
from simproc import start_sim

SCENARIO = {
    "name": "memory-soak",
    "seed": 11,
    "lifecycle": {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 60, "high": 120}},
    "outcomes": {"failed": 0.01, "incomplete": 0.0},
    "quota": {"rpm": 10_000_000, "window": 60},
}
MB = 1e6


def rss_bytes() -> int:
    """Return this process's resident set size now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope(points: list[tuple[float, float]]) -> float:
    """Return the least-squares slope of ``y`` over ``x``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def size(obj: object, path: str) -> int:
    """Return ``len()`` of the attribute at dotted ``path`` under ``obj``, or -1 if absent."""
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return -1
    return len(obj)  # type: ignore[arg-type]


# The fleet's own per-run and per-event structures, by internal name: the benchmark reads them
# for the figures only, so a renamed one shows -1 instead of failing the run.
STRUCTURES = {
    "schedule heap": "_engine._pacer.schedule._heap",
    "schedule live": "_engine._pacer.schedule._entries",
    "runs in table": "_engine._runs._runs",
    "early events": "_engine._pacer._early",
    "by_response": "_engine._pacer.by_response",
    "scouts held": "_engine._pacer.scouting._held",
    "learned keys": "_engine._pacer.times._keys",
    "stats recent": "_stats.recent",
    "stats latencies": "_stats.latencies",
    "admission heap: polls": "_quota._queue._polls",
    "admission heap: creates": "_quota._queue._creates",
    "token ledger": "_quota.tokens.budget._sent",
}


def structures(fleet: Fleet) -> dict[str, int]:
    """Count the entries of the fleet's own structures."""
    return {name: size(fleet, path) for name, path in STRUCTURES.items()}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Keep ``args.in_flight`` runs in flight until ``args.polls`` retrieves; return figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.json"
        path.write_text(json.dumps(SCENARIO))
        proc, url = start_sim("--scenario", str(path), "--time-scale", str(args.time_scale))
    samples: list[dict[str, float]] = []
    # Snapshots go to files and are read back at the end: one kept in memory holds a trace
    # per live block, and its megabytes would show in the RSS being measured.
    snapshots: list[Path] = []
    store = tempfile.TemporaryDirectory()
    sizes: list[dict[str, int]] = []
    ended = started = 0
    feed = asyncio.Queue[None]()
    try:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-soak")
        async with Fleet(client, rpm=args.rpm, on_exit="detach", seed=1) as fleet:

            def on_end(_: RunHandle) -> None:
                nonlocal ended
                ended += 1
                feed.put_nowait(None)  # one run ended: start the next

            async def feeder() -> None:
                nonlocal started
                for _ in range(args.in_flight):
                    feed.put_nowait(None)
                while True:
                    await feed.get()
                    handle = await fleet.submit_response(
                        model="gpt-5-mini", input=f"task {started}"
                    )
                    started += 1
                    handle.add_done_callback(on_end)
                    del handle  # kept by the fleet until it ends, by nobody after

            t0 = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(feeder())
                while True:
                    await asyncio.sleep(args.every)
                    polls = fleet.stats().requests.get("retrieve", 0)
                    gc.collect()  # measure what is live, not garbage awaiting a collection
                    traced = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
                    samples.append(
                        {
                            "t": time.perf_counter() - t0,
                            "polls": polls,
                            "rss": rss_bytes(),
                            "traced": traced,
                            "ended": ended,
                        }
                    )
                    print(
                        f"{samples[-1]['t']:7.0f} s {polls:8,} polls {ended:7,} ended "
                        f"RSS {samples[-1]['rss'] / MB:6.1f} MB traced {traced / MB:6.1f} MB",
                        file=sys.stderr,
                    )
                    # Three snapshots: after warm-up, half-way through the rest, at the end.
                    marks = (args.warmup, (args.warmup + args.polls) // 2, args.polls)
                    if len(sizes) < 3 and polls >= marks[len(sizes)]:
                        sizes.append(structures(fleet))
                        if args.tracemalloc:
                            snapshots.append(Path(store.name) / f"{len(snapshots)}.snapshot")
                            tracemalloc.take_snapshot().dump(str(snapshots[-1]))
                            gc.collect()
                    if len(sizes) == 3:
                        task.cancel()
                        break
        await client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    after = [s for s in samples if s["polls"] >= args.warmup]
    out: dict[str, Any] = {
        "in_flight": args.in_flight,
        "polls": samples[-1]["polls"],
        "ended": samples[-1]["ended"],  # not those the fleet's exit ends, detached
        "seconds": samples[-1]["t"],
        "rss_mb": [round(s["rss"] / MB, 1) for s in samples],
        "rss_slope_mb_per_10k_polls": slope([(s["polls"], s["rss"]) for s in after]) * 1e4 / MB,
        "traced_slope_mb_per_10k_polls": slope([(s["polls"], s["traced"]) for s in after])
        * 1e4
        / MB,
        "structures": sizes,
        "samples": samples,
    }
    if len(snapshots) == 3:
        key = "traceback" if args.frames > 1 else "lineno"
        loaded = [tracemalloc.Snapshot.load(str(path)) for path in snapshots]
        store.cleanup()
        first, second = (b.compare_to(a, key) for a, b in itertools.pairwise(loaded))
        halves = {stat.traceback: stat.size_diff for stat in second}
        out["top"] = [
            {
                "site": " <- ".join(f"{f.filename}:{f.lineno}" for f in stat.traceback),
                "first_half_kb": stat.size_diff / 1024,
                "second_half_kb": halves.get(stat.traceback, 0) / 1024,
                "count": stat.count,
            }
            for stat in sorted(
                first, key=lambda s: s.size_diff + halves.get(s.traceback, 0), reverse=True
            )[: args.top]
        ]
    return out


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the slope, the structures' sizes and the growing sites."""
    print(
        f"{r['in_flight']:,} in flight, {r['polls']:,} polls, {r['ended']:,} runs ended, "
        f"{r['seconds']:.0f} s; warm-up {args.warmup:,} polls"
    )
    print(f"RSS MB every {args.every:g} s: {r['rss_mb']}")
    print(f"slope after warm-up: RSS {r['rss_slope_mb_per_10k_polls']:+.3f} MB per 10,000 polls")
    if args.tracemalloc:
        traced = r["traced_slope_mb_per_10k_polls"]
        print(f"                     traced {traced:+.3f} MB per 10,000 polls")
    if len(r["structures"]) == 3:
        print("\nentries: after warm-up -> half-way -> at the end")
        for name, first in r["structures"][0].items():
            mid, end = r["structures"][1][name], r["structures"][2][name]
            print(f"  {first:9,} -> {mid:9,} -> {end:9,}  {name}")
    if r.get("top"):
        print("\ngrowth by site, KiB in the first and second half after warm-up (blocks live):")
        for t in r["top"]:
            print(
                f"  {t['first_half_kb']:+8.1f} {t['second_half_kb']:+8.1f} "
                f"({t['count']:,})  {t['site']}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=3000)
    parser.add_argument("--polls", type=int, default=200_000, help="stop after this many")
    parser.add_argument("--warmup", type=int, default=20_000, help="polls before the slope")
    parser.add_argument("--rpm", type=float, default=18_000, help="the fleet's quota")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--tracemalloc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--frames", type=int, default=1, help="traceback depth per site")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(args.frames)
    result = asyncio.run(soak(args))
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
