"""Invariant 9 across real OS processes: N fleets, one simulator, one Redis, one account.

Each process is ``tests/shared_worker.py`` with its own fleet configured for the *whole*
account's limit, so alone each would spend all of it: together they stay under it only if the
shared store holds. The simulator counts what arrives (peak window, 429s by limit); without
Redis the same processes overrun it, which shows the test can fail.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from runfleet.sim import SimServer

from .helpers import StartSim

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent
# Real time: the fleet's bucket bounds every 60 s of real time, so a scaled simulator's
# minute (6 s at 0.1) would see a burst and 6 s of drain against a tenth of the quota.
SCALE = 1.0
RPM = 1200  # 20 a second, which three processes easily exceed
# Each worker is told the whole account's limit and its burst (the server's, per second).
ALONE = ("--runs", "30", "--rpm", str(RPM), "--burst", str(RPM / 60))


async def run_workers(sim: SimServer, n: int, *args: str) -> list[dict[str, Any]]:
    """Start ``n`` worker processes, let them go together; return what each printed."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.shared_worker",
            sim.base_url,
            "--scale",
            str(SCALE),
            "--seed",
            str(i),
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    outs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]


def requests_account(rpm: float) -> dict[str, Any]:
    """Requests bind (per-second windows, as ``tight``); runs end quickly."""
    return {
        "name": "shared-requests",
        "seed": 3,
        "lifecycle": {"queued": 0.3, "in_progress": 2.0},
        "quota": {"rpm": rpm, "window": 1},
    }


@pytest.mark.timeout(90)
async def test_processes_sharing_redis_stay_under_the_request_limit(
    start_sim: StartSim, redis_url: str
) -> None:
    """Three processes, each configured for the whole account: 0 429s, peak ≤ quota."""
    async with start_sim(requests_account(RPM), time_scale=SCALE) as sim:
        results = await run_workers(sim, 3, *ALONE, "--redis", redis_url)
        stats = sim.stats()
    assert sum(r["done"] + r["failed"] for r in results) == 90
    assert stats["rate_limited"] == 0, stats["rate_limited_by_type"]
    assert stats["peak_window"]["peak"] <= stats["peak_window"]["quota"]
    assert all(r["shared"]["calls"] > 0 and r["shared"]["members"] >= 2 for r in results)


@pytest.mark.timeout(90)
async def test_the_same_processes_without_redis_overrun_the_limit(start_sim: StartSim) -> None:
    """The contrast: each process alone at the account's limit draws 429s."""
    async with start_sim(requests_account(RPM), time_scale=SCALE) as sim:
        await run_workers(sim, 3, *ALONE)
        stats = sim.stats()
    assert stats["rate_limited"] > 0


@pytest.mark.timeout(90)
async def test_processes_sharing_redis_stay_under_the_token_limit(
    start_sim: StartSim, redis_url: str
) -> None:
    """Tokens bind: three processes, each told the whole TPM, spend it together, no 429."""
    account = {
        "name": "shared-tokens",
        "seed": 4,
        "lifecycle": {"queued": 0.3, "in_progress": 1.0},
        "quota": {"rpm": 6000, "tpm": 30_000, "window": 10},
        "tokens": {"estimate": "chars/4", "output": {"dist": "fixed", "value": 50}},
    }
    async with start_sim(account, time_scale=SCALE) as sim:
        results = await run_workers(
            sim,
            3,
            "--runs",
            "25",
            "--rpm",
            str(6000 / SCALE),
            "--tpm",
            str(30_000 / SCALE),
            "--prompt-chars",
            "400",
            "--max-output",
            "200",
            "--redis",
            redis_url,
        )
        stats = sim.stats()
    assert sum(r["done"] for r in results) == 75
    assert stats["rate_limited_by_type"]["tokens"] == 0
    assert stats["rate_limited"] == 0
    tokens = stats["tokens"]["peak_window"]
    assert tokens["peak"] <= tokens["quota"]
