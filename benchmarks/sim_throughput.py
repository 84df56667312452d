"""How many retrieves per second the simulator serves with 20,000 live runs on this machine.

The simulator runs in its own process (``runfleet sim``), as users run it; the load comes from
this process over loopback with a lean aiohttp client (not the SDK, whose ~3 ms of CPU per
request would measure the client instead of the server). Runs are made long so that all of
them stay live (queued or in progress) during the measurement.

    .venv/bin/python benchmarks/sim_throughput.py [--runs 20000] [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import aiohttp

from simproc import start_sim

SCENARIO = {
    "name": "throughput",
    "lifecycle": {"queued": 5.0, "in_progress": 3600.0},
    "quota": {"rpm": 100_000_000, "window": 60},
}
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}


def cpu_seconds(pid: int) -> float:
    """Return user+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_runs(session: aiohttp.ClientSession, url: str, n: int, conc: int) -> list[str]:
    ids: list[str] = []
    sem = asyncio.Semaphore(conc)
    body = json.dumps({"model": "gpt-5-mini", "input": "hello", "background": True})

    async def one() -> None:
        async with sem, session.post(f"{url}/v1/responses", data=body, headers=HEADERS) as r:
            ids.append((await r.json())["id"])

    await asyncio.gather(*(one() for _ in range(n)))
    return ids


async def hammer(
    session: aiohttp.ClientSession, url: str, ids: list[str], seconds: float, conc: int
) -> tuple[int, list[float], int]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0

    async def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.get(f"{url}/v1/responses/{rng.choice(ids)}", headers=HEADERS) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(i) for i in range(conc)))
    return len(latencies), latencies, errors


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "throughput.json"
        path.write_text(json.dumps(SCENARIO))
        proc, url = start_sim("--scenario", str(path))
    try:
        conn = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            t0 = time.perf_counter()
            ids = await create_runs(session, url, args.runs, args.concurrency)
            create_s = time.perf_counter() - t0
            before = await (await session.get(f"{url}/_sim/stats")).json()
            t0, cpu0, own0 = time.perf_counter(), cpu_seconds(proc.pid), time.process_time()
            done, lat, errors = await hammer(session, url, ids, args.seconds, args.concurrency)
            elapsed = time.perf_counter() - t0
            server_cpu = cpu_seconds(proc.pid) - cpu0
            client_cpu = time.process_time() - own0
            after = await (await session.get(f"{url}/_sim/stats")).json()
        served = after["requests"]["responses.retrieve"] - before["requests"].get(
            "responses.retrieve", 0
        )
        live = sum(
            v for k, v in after["responses"]["by_status"].items() if k in ("queued", "in_progress")
        )
        lat.sort()
        machine = f"{platform.machine()}, {os.cpu_count()} cores"
        print(f"machine: {machine}, Python {platform.python_version()}")
        print(
            f"created {args.runs} runs in {create_s:.1f} s ({args.runs / create_s:.0f} creates/s)"
        )
        print(f"live runs during the measurement: {live}")
        print(
            f"retrieves: {served} in {elapsed:.1f} s = {served / elapsed:.0f}/s "
            f"(concurrency {args.concurrency}, {errors} errors)"
        )
        print(
            f"latency p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms"
        )
        print(
            f"CPU: simulator {server_cpu / elapsed:.0%} of a core "
            f"({server_cpu / served * 1e6:.0f} us per retrieve), "
            f"load generator {client_cpu / elapsed:.0%}"
        )
        assert done >= served * 0.99
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
