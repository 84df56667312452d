"""Can one process keep 10,000 runs in flight through one Fleet, and what does the fleet cost?

    .venv/bin/python benchmarks/fleet_scale.py --runs 10000 --http both --time-scale 1.0 \
        --rpm 18000 --profile --json fleet_scale.json

Each workload runs in a fresh worker process (its own RSS peak and CPU time) against its own
``runfleet sim`` process: a quota that never binds (10 M RPM over 60 s), runs queued 2 s then
in progress 40-60 s (uniform, so all are still in flight when the last is submitted), 1 % of
them planned to fail. One ``AsyncOpenAI(base_url=..., api_key="sk-bench")`` (default httpx
client, or ``DefaultAioHttpClient()``), one ``Fleet(client, rpm=--rpm, concurrency=64)`` with
the default poll policy; 64 tasks submit the runs, then every handle is awaited. The fleet's
rpm (300/s) keeps the process off CPU saturation. runfleet logs nothing below WARNING unless
the application turns it on (its loggers are the stdlib's), as in production.
Phases: *submit* (mostly creates: they alternate with polls in the quota) and *poll* (the last
create to the last run ended). *Lost*: a handle not done, or ended with an error other than
the planned ``RunFailed``. Counts are checked against the simulator's ``GET /_sim/stats``.

``--profile``: each client gets an un-profiled run (the wall, CPU and RSS figures to quote), then
one whose poll phase runs under ``cProfile`` (wall-clock timer; the sampler does not call
``Fleet.stats()``, O(runs), meanwhile). Each function's ``tottime`` is summed by where it lives:
``src/runfleet/`` (the fleet's own overhead, per retrieve of the phase), openai + pydantic +
httpx2/httpcore2/h11 or aiohttp/yarl/multidict, asyncio/anyio/selectors, idle in epoll, other
(builtins, stdlib); in brackets, builtins and stdlib are charged to their callers instead.
cProfile inflates short Python functions most: the fleet's share is an upper bound. This VM
under-reports process CPU: a pure-Python busy loop reports ~1.7 s of CPU per 2.3 s of wall.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
from openai import AsyncOpenAI, DefaultAioHttpClient

from runfleet import Fleet, RunFailed, RunfleetError, RunHandle
from simproc import start_sim

SCENARIO = {
    "name": "fleet-scale",
    "seed": 7,
    "lifecycle": {"queued": 2.0, "in_progress": {"dist": "uniform", "low": 40, "high": 60}},
    "outcomes": {"failed": 0.01, "incomplete": 0.0},
    "quota": {"rpm": 10_000_000, "window": 60},
}
SUBMITTERS = 64
SDK_HTTP = "openai pydantic pydantic_core httpx2 httpcore2 h11 aiohttp yarl multidict propcache"
SDK_HTTP += " aiohappyeyeballs frozenlist aiosignal"
BUCKETS = ("runfleet", "sdk_http", "asyncio_anyio", "structlog", "other", "idle")
Key = tuple[str, int, str]  # pstats: file, line, function


def cpu_seconds(pid: int | None = None) -> float:
    """Return user+system CPU seconds of this process, or of another one (Linux /proc)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sim_with(scale: float) -> tuple[subprocess.Popen[str], str]:
    """Start ``runfleet sim`` on this benchmark's scenario; return it and its root URL."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.json"
        path.write_text(json.dumps(SCENARIO))
        # start_sim returns once the scenario is loaded: the file may go
        return start_sim("--scenario", str(path), "--time-scale", str(scale))


def bucket(key: Key) -> str:
    """Name where a profiled function's own time goes."""
    file, _, name = key
    if "/src/runfleet/" in file:
        return "runfleet"
    if "select.epoll" in name:
        return "idle"
    where = name if file == "~" else file  # builtins: 'method validate_python of pydantic_core..'
    if any(f"/{p}/" in where or f"{p}." in name for p in SDK_HTTP.split()):
        return "sdk_http"
    if any(f"/{p}" in file for p in ("asyncio/", "anyio/", "selectors.py")):
        return "asyncio_anyio"
    return "structlog" if "/structlog/" in file else "other"


def profile_sums(prof: cProfile.Profile) -> tuple[Counter[str], Counter[str]]:
    """Sum tottime by bucket: by file, and with builtins and stdlib charged to their callers."""
    raw: dict[Key, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    memo: dict[Key, Counter[str]] = {}

    def shares(key: Key, seen: frozenset[Key]) -> Counter[str]:
        name = bucket(key)
        if name != "other" or key in seen or key not in raw:
            return Counter({name: 1.0})
        if key not in memo:
            callers = raw[key][4]  # caller -> (calls, primitive calls, tottime, cumtime)
            total = sum(v[2] for v in callers.values())
            memo[key] = Counter({} if total else {"other": 1.0})
            for caller, v in callers.items():
                for b, f in shares(caller, seen | {key}).items():
                    memo[key][b] += f * v[2] / total
        return memo[key]

    own: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    for key, (_, _, tottime, _, _) in raw.items():
        own[bucket(key)] += tottime
        for b, f in shares(key, frozenset()).items():
            charged[b] += tottime * f
    return own, charged


async def workload(
    http: str, runs: int, scale: float, rpm: float, profiled: bool
) -> dict[str, Any]:
    """Run one workload against a fresh simulator; return its figures."""
    proc, url = start_sim_with(scale)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    handles: list[RunHandle] = []
    ended = 0
    all_ended = asyncio.Event()
    peak = {"in_flight": 0, "tasks": 0, "lag": 0.0}
    lags: list[float] = []  # every 0.1 s tick's lateness, for the p99
    prof = cProfile.Profile() if profiled else None
    profiling = False  # whether the poll phase is being profiled
    gc_pauses: list[float] = []  # full (generation 2) collections

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_pauses.append(-time.perf_counter())
        elif info["generation"] == 2:  # the event loop stands still meanwhile
            gc_pauses[-1] += time.perf_counter()
        else:
            gc_pauses.pop()

    def on_end(_: RunHandle) -> None:
        nonlocal ended
        ended += 1
        if ended == runs:
            all_ended.set()

    try:
        http_client = DefaultAioHttpClient() if http == "aiohttp" else None
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench", http_client=http_client)
        async with Fleet(client, rpm=rpm, concurrency=64, on_exit="detach", seed=1) as fleet:

            async def sample() -> None:
                for tick in itertools.count():
                    t = time.perf_counter()
                    await asyncio.sleep(0.1)
                    lags.append(time.perf_counter() - t - 0.1)
                    peak["lag"] = max(peak["lag"], lags[-1])
                    peak["tasks"] = max(peak["tasks"], len(asyncio.all_tasks()))
                    # stats() counts every run: once a second, and not while profiling
                    if tick % 10 == 0 and not profiling:
                        in_flight = sum(fleet.stats().in_flight.values())
                        peak["in_flight"] = max(peak["in_flight"], in_flight)

            numbers = iter(range(runs))  # shared: each number is taken by one submitter

            async def submitter() -> None:
                for i in numbers:
                    try:
                        handle = await fleet.submit_response(model="gpt-5-mini", input=f"task {i}")
                    except RunfleetError:
                        continue  # refused: it counts as lost
                    handles.append(handle)
                    handle.add_done_callback(on_end)

            sim_cpu0, cpu0, t0 = cpu_seconds(proc.pid), cpu_seconds(), time.perf_counter()
            sampler = asyncio.create_task(sample())
            gc.callbacks.append(on_gc)
            async with asyncio.TaskGroup() as tg:
                for _ in range(SUBMITTERS):
                    tg.create_task(submitter())
            t1 = time.perf_counter()
            peak["in_flight"] = max(peak["in_flight"], sum(fleet.stats().in_flight.values()))
            polls0 = fleet.stats().requests.get("retrieve", 0)
            if prof is not None:
                prof.enable()
                profiling = True
            try:
                async with asyncio.timeout(max(600.0, 20 * runs / rpm * 60)):
                    await all_ended.wait()
            except TimeoutError:
                pass  # the runs not ended by now are lost
            if prof is not None:
                prof.disable()
            t2, cpu2, sim_cpu2 = time.perf_counter(), cpu_seconds(), cpu_seconds(proc.pid)
            sampler.cancel()
            gc.callbacks.remove(on_gc)
            st = fleet.stats()
            completed = sum(h.done() and h.exception() is None for h in handles)
            failed = sum(isinstance(h.exception(), RunFailed) for h in handles)
        await client.close()
        async with httpx2.AsyncClient() as stats_client:
            sim = (await stats_client.get(f"{url}/_sim/stats")).json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    req, sim_req, wall, cpu = dict(st.requests), sim["requests"], t2 - t0, cpu2 - cpu0
    det = sim["responses"]["detection"]
    out: dict[str, Any] = {
        "http": http,
        "profiled": profiled,
        "runs": runs,
        "peak_in_flight": peak["in_flight"],
        "completed": completed,
        "failed": failed,
        "lost": runs - completed - failed,  # not ended, refused, or an unplanned error
        "requests": req,
        "polls_per_run": st.polls_per_run,
        "sim": {"requests": sim_req, "by_status": sim["responses"]["by_status"], "detection": det},
        "outcomes": dict(st.outcomes),
        # the simulator never sees a request whose connection failed (the fleet retries it)
        "counts_match": sim["requests_total"] == st.requests_total - st.outcomes.get("network", 0)
        and sim_req.get("responses.create") == req.get("create")
        and sim["responses"]["by_status"].get("failed", 0) == failed,
        "detection_s": {q: det[q] * scale for q in ("p50", "p95", "max")},  # to real seconds
        "submit_s": t1 - t0,
        "poll_s": t2 - t1,
        "requests_per_s": st.requests_total / wall,
        "cpu_s": cpu,
        "cpu_share": cpu / wall,
        "cpu_us_per_request": cpu / st.requests_total * 1e6,
        "sim_cpu_s": sim_cpu2 - sim_cpu0,
        "peak_tasks": peak["tasks"],
        "loop_lag_max_s": peak["lag"],
        "loop_lag_p99_s": sorted(lags)[int(0.99 * (len(lags) - 1))] if lags else 0.0,
        "gc_full": len(gc_pauses),
        "gc_full_max_s": max(gc_pauses, default=0.0),
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss0 / 1024,
        "load_avg_1m": os.getloadavg()[0],  # about 1.1 when nothing else runs on the machine
    }
    if prof is not None:
        polls = req.get("retrieve", 0) - polls0
        own, charged = profile_sums(prof)
        out["profile_polls"] = polls
        out["profile_us_per_poll"] = {k: v / polls * 1e6 for k, v in own.items()}
        out["profile_us_per_poll_charged"] = {k: v / polls * 1e6 for k, v in charged.items()}
    return out


def rows(r: dict[str, Any]) -> dict[str, str]:
    """Format one workload's figures for the table."""
    rq = r["requests"]
    return {
        "runs / peak in flight": f"{r['runs']:,} / {r['peak_in_flight']:,}",
        "completed / failed / lost": f"{r['completed']:,} / {r['failed']} / {r['lost']}",
        "requests: create + retrieve": f"{rq.get('create', 0):,} + {rq.get('retrieve', 0):,}",
        "polls per run": f"{r['polls_per_run']:.2f}",
        "request errors (all retried)": str(sum(r["outcomes"].values()) - r["outcomes"]["ok"]),
        "fleet's counts = simulator's": str(r["counts_match"]),
        "wall: submit + poll": f"{r['submit_s']:.1f} + {r['poll_s']:.1f} s",
        "requests/s": f"{r['requests_per_s']:.0f}",
        "process CPU (share of wall) [1]": f"{r['cpu_s']:.1f} s ({r['cpu_share']:.0%})",
        "CPU per request [1]": f"{r['cpu_us_per_request']:.0f} µs",
        "simulator CPU [1]": f"{r['sim_cpu_s']:.1f} s",
        "machine load (1-min average at the end)": f"{r['load_avg_1m']:.2f}",
        "asyncio tasks, peak": str(r["peak_tasks"]),
        "event-loop lag, max": f"{r['loop_lag_max_s'] * 1000:.0f} ms",
        "event-loop lag, p99": f"{r['loop_lag_p99_s'] * 1000:.0f} ms",
        "full GCs (longest)": f"{r['gc_full']} ({r['gc_full_max_s'] * 1000:.0f} ms)",
        "RSS peak (at start)": f"{r['rss_peak_mib']:.0f} ({r['rss_before_mib']:.0f}) MiB",
        "detection p50 / p95 / max": "{p50:.1f} / {p95:.1f} / {max:.1f} s".format(
            **r["detection_s"]
        ),
    }


def report(results: list[dict[str, Any]]) -> None:
    """Print the figures as Markdown tables, one column per workload."""
    heads = [f"{r['http']}{' (profiled)' if r['profiled'] else ''}" for r in results]
    print(f"| | {' | '.join(heads)} |\n|---|{'---|' * len(results)}")
    table = [rows(r) for r in results]
    for label in table[0]:
        print(f"| {label} | {' | '.join(t[label] for t in table)} |")
    if prof := [r for r in results if r["profiled"]]:
        print("\nPoll phase under cProfile: µs of tottime per poll, by file (and with builtins")
        print(f"and stdlib charged to callers)\n\n| | {' | '.join(r['http'] for r in prof)} |")
        print(f"|---|{'---|' * len(prof)}")
        us = [(r["profile_us_per_poll"], r["profile_us_per_poll_charged"]) for r in prof]
        for b in BUCKETS:
            print(
                f"| {b} | {' | '.join(f'{o.get(b, 0):.0f} ({c.get(b, 0):.0f})' for o, c in us)} |"
            )
        share = [[d["runfleet"] / (sum(d.values()) - d.get("idle", 0)) for d in u] for u in us]
        print(
            f"| runfleet's share of busy | {' | '.join(f'{o:.1%} ({c:.1%})' for o, c in share)} |"
        )
    print("\n[1] this VM under-reports process CPU (a busy loop reports ~1.7 s per 2.3 s of wall)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--http", choices=["httpx", "aiohttp", "both"], default="both")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--rpm", type=float, default=18_000, help="the fleet's quota")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--worker", choices=["httpx", "aiohttp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = workload(args.worker, args.runs, args.time_scale, args.rpm, args.profile)
        print(json.dumps(asyncio.run(work)))
        return 0
    if args.runs / (args.rpm / 60) > (shortest := (2 + 40) * args.time_scale):
        print(f"warning: submitting takes longer than the shortest run ({shortest:g} s)")
    results = []
    for http in ["httpx", "aiohttp"] if args.http == "both" else [args.http]:
        for profiled in (False, True) if args.profile else (False,):
            cmd = [sys.executable, __file__, "--worker", http, "--runs", str(args.runs)]
            cmd += ["--time-scale", str(args.time_scale), "--rpm", str(args.rpm)]
            cmd += ["--profile" if profiled else "--no-profile"]
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {http}{' (profiled)' if profiled else ''}", file=sys.stderr)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}")
    report(results)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 1 if any(r["lost"] or not r["counts_match"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
