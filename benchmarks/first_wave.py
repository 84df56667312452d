"""One grid cell on the simulator, run by run: what the first wave costs, and the offline race
on the very same run times.

Runs ``runfleet bench``'s runner against a ``runfleet sim`` child, reads the simulator's
per-run record (``/_sim/stats?runs=1``) and prints polls and detection latency by creation
order, then replays the drawn run times, in order, through ``bench.race``'s learned and classic
schedules (no first wave, no network). Cells of medians over 4 s run time-scaled as in
``make bench`` (``grid.time_scale``); the seconds printed are scenario seconds.

    # cell, runs, strategy, in flight[, a file for every run's record]:
    .venv/bin/python benchmarks/first_wave.py m4-s0.3 500 fleet 100
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2
import numpy as np

from grid import cells, oracle_polls, time_scale
from runfleet.bench.race import classic_run, learned_run
from runfleet.bench.runner import BenchConfig, run_bench
from runfleet.polling.learning import RunTimes
from runfleet.polling.policy import PollPolicy
from runfleet.sim.server import announced_url, sim_command


async def main() -> list[dict[str, Any]]:
    name, runs = sys.argv[1], int(sys.argv[2])
    strategy = sys.argv[3] if len(sys.argv) > 3 else "fleet"
    in_flight = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    cell = {c.name: c for c in cells(runs)}[name]
    proc = subprocess.Popen(  # noqa: ASYNC220 - the simulator lives until the end
        sim_command("--log-level", "error"), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = announced_url(proc.stdout.readline())
        assert url is not None, "the simulator did not start"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.json"
            path.write_text(json.dumps(cell.scenario(runs)))
            scale = 1.0 if cell.median <= 4 else time_scale(cell)  # as `make bench` runs them
            cfg = BenchConfig(
                scenario=path, runs=runs, strategies=strategy, time_scale=scale, timeout=120,
                limit=600, base_url=url, in_flight=in_flight,
            )  # fmt: skip
            row = (await run_bench(cfg)).rows[0]
        async with httpx2.AsyncClient() as http:
            stats = (await http.get(f"{url}/_sim/stats", params={"runs": "1"})).json()
    finally:
        proc.terminate()
    records: list[dict[str, Any]] = stats["responses"]["items"]
    print(f"{strategy}: {row.polls_per_run:.3f} polls/run, p95 {row.p95:.2f} s")
    edges = sorted({0, 10, in_flight, 2 * in_flight, len(records)} & set(range(len(records) + 1)))
    for lo, hi in itertools.pairwise(edges):
        polls = [it["retrieves"] for it in records[lo:hi]]
        late = [it["latencies"][-1] for it in records[lo:hi] if it["latencies"]]
        print(f"  runs {lo}-{hi}: {np.mean(polls):.2f} polls, p95 {np.percentile(late, 95):.2f} s")
    model, rng, crng = RunTimes[tuple[str, str]](PollPolicy()), random.Random(5), random.Random(6)
    learned: list[int] = []
    classic: list[int] = []
    lat: list[float] = []
    for it in records:
        made, seen = learned_run(model, ("m", "x"), it["seconds"], rng)
        learned.append(made)
        lat.append(seen - it["seconds"])
        classic.append(classic_run(model.policy.backoff, it["seconds"], crng)[0])
    p95 = float(np.percentile(lat, 95))
    print(f"  offline on the same run times: learned {np.mean(learned):.2f} polls, p95 {p95:.2f} s;"
          f" classic {np.mean(classic):.2f}; oracle at {row.p95:.2f} s: "
          f"{oracle_polls(cell, row.p95) or 0:.2f}")  # fmt: skip
    return records


if __name__ == "__main__":
    records = asyncio.run(main())
    if len(sys.argv) > 5:  # every run's record, its polls' ages too, for a closer look
        Path(sys.argv[5]).write_text(json.dumps(records))
