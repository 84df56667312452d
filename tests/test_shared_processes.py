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
from asyncio.subprocess import PIPE, Process
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aredis

from runfleet.sim import SimServer

from .helpers import StartSim
from .redis_server import RedisServer

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent
# Real time: the fleet's bucket bounds every 60 s of real time, so a scaled simulator's
# minute (6 s at 0.1) would see a burst and 6 s of drain against a tenth of the quota.
SCALE = 1.0
RPM = 1200  # 20 a second, which three processes easily exceed
# Each worker is told the whole account's limit and its burst (the server's, per second).
ALONE = ("--runs", "30", "--rpm", str(RPM), "--burst", str(RPM / 60), "--scale", str(SCALE))


async def spawn(sim: SimServer, seed: int, *args: str) -> Process:
    """Start one worker process and wait until it is ready for the word."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.shared_worker",
        sim.base_url,
        "--seed",
        str(seed),
        *args,
        cwd=ROOT,
        stdin=PIPE,
        stdout=PIPE,
        stderr=PIPE,
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    return proc


async def finish(proc: Process) -> dict[str, Any]:
    """Say go (if not said yet), wait for the worker to end, return what it printed."""
    out, err = await proc.communicate(b"go\n")
    assert proc.returncode == 0, err.decode()[-2000:]
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def run_workers(
    sim: SimServer, n: int, *args: str, during: Callable[[], Awaitable[None]] | None = None
) -> list[dict[str, Any]]:
    """Start ``n`` worker processes, let them go together; return what each printed.

    ``during`` runs beside them once they are off (a Redis outage, say).
    """
    procs = [await spawn(sim, i, *args) for i in range(n)]
    ran = asyncio.gather(*(finish(p) for p in procs))
    if during is not None:
        await during()
    return list(await ran)


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


TOKENS = {
    "name": "shared-tokens",
    "seed": 4,
    "lifecycle": {"queued": 0.3, "in_progress": 1.0},
    # 1,000 tokens a second, in a bucket of two seconds' worth; the input is the text's.
    "quota": {"rpm": 6000, "tpm": 60_000, "window": 2},
    "tokens": {"estimate": "chars/4", "output": {"dist": "fixed", "value": 50}},
}
# 100 input tokens and 200 reserved for output: 300 a request, 150 once settled.
TOKEN_WORKER = ("--runs", "20", "--rpm", "6000", "--tpm", "60000", "--prompt-chars", "400")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "alone"])
async def test_processes_sharing_redis_stay_under_the_token_limit(
    start_sim: StartSim, redis_url: str, shared: bool
) -> None:
    """Tokens bind: three processes, each told the whole TPM; with Redis no token 429."""
    redis = ("--redis", redis_url) if shared else ()
    async with start_sim(TOKENS, time_scale=1.0) as sim:
        results = await run_workers(sim, 3, *TOKEN_WORKER, "--max-output", "200", *redis)
        stats = sim.stats()
    assert sum(r["done"] for r in results) == 60
    tokens = stats["tokens"]["peak_window"]
    assert tokens["peak"] <= tokens["quota"]
    if shared:
        assert stats["rate_limited"] == 0, stats["rate_limited_by_type"]
    else:
        assert stats["rate_limited_by_type"]["tokens"] > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", ["fail_closed", "local_fallback"])
async def test_a_redis_restart_under_load_loses_no_run(
    start_sim: StartSim, redis_server: RedisServer, policy: str
) -> None:
    """Redis is killed for 1.5 s while three processes run: every run still ends done."""

    async def outage() -> None:
        await asyncio.sleep(1.5)
        redis_server.stop()
        await asyncio.sleep(1.5)
        redis_server.start()

    async with start_sim(requests_account(RPM), time_scale=SCALE) as sim:
        results = await run_workers(
            sim, 3, *ALONE, "--redis", redis_server.url, "--on-failure", policy, during=outage
        )
        stats = sim.stats()
    assert sum(r["done"] for r in results) == 90
    assert all(r["shared"]["state"] == "shared" for r in results)  # back once Redis was
    assert sum(r["shared"]["failures"] for r in results) > 0  # and each saw it go
    # What the outage cost: fail_closed sends nothing unshared; the fallback runs at rpm / N.
    assert stats["rate_limited"] <= (0 if policy == "fail_closed" else 10)


# Every request is refused for the first 6 s after the simulator's first request (a storm:
# its 429s say how long it has left), then the account is wide open.
STORM = {
    "name": "storm",
    "seed": 5,
    "lifecycle": {"queued": 0.2, "in_progress": 0.5},
    "quota": {"rpm": 6000, "window": 1},
    "faults": {"storms": {"every": 10_000, "duration": 6}},
}


async def pause_left(url: str) -> float:
    """Seconds left of the requests pause the account's processes share (0: none)."""
    async with aredis.Redis.from_url(url) as r:
        until = float(await r.hget("runfleet:{tests}:limits", "pause_r") or 0)
        secs, micros = await r.time()
    return until - (secs + micros / 1e6)


@pytest.mark.timeout(120)
async def test_a_429_in_one_process_pauses_the_others_until_its_retry_after(
    start_sim: StartSim, redis_url: str
) -> None:
    """A meets the storm; B, started while it lasts, sends nothing until the pause A shared ends.

    B has seen no 429 of its own: had it sent a request before the storm's end, the simulator
    would have refused it.
    """
    async with start_sim(STORM, time_scale=1.0) as sim:
        shared = ("--rpm", "6000", "--burst", "50", "--redis", redis_url)
        a = await spawn(sim, 1, "--runs", "1", *shared)
        b = await spawn(sim, 2, "--runs", "10", *shared)
        sim.reset()  # the storm starts at the next request: A's create
        ran_a = asyncio.create_task(finish(a))
        with anyio.fail_after(30):
            while (left := await pause_left(redis_url)) <= 0:  # noqa: ASYNC110 - another process's
                await asyncio.sleep(0.02)
        result_b = await finish(b)
        result_a = await ran_a
        stats = sim.stats()
    assert left > 2.0  # B was let go with most of the storm still ahead of it
    assert result_a["rate_limited"] >= 1
    assert result_b["rate_limited"] == 0
    assert (result_a["done"], result_b["done"]) == (1, 10)
    assert stats["storm_limited"] == result_a["rate_limited"]  # B's requests all came after


@pytest.mark.timeout(120)
async def test_priorities_hold_inside_each_process_while_the_reservation_is_shared(
    start_sim: StartSim, redis_url: str
) -> None:
    """Two processes queue polls, creates, then submits on one account held to 5 a second.

    In each, the submits go before every poll and create queued with them; together they are
    admitted at the one rate (alone each would finish in half the time).
    """
    rpm, k = 300.0, 5
    async with start_sim(requests_account(6000), time_scale=1.0) as sim:
        args = ("--runs", "0", "--rpm", str(rpm), "--burst", "1", "--redis", redis_url)
        results = await run_workers(sim, 2, *args, "--priorities", str(k))
    times = []
    for result in results:
        order = result["order"]
        assert len(order) == 3 * k
        assert sum(1 for _, all_queued, _ in order if not all_queued) <= 1
        ranked = [name for name, all_queued, _ in order if all_queued]
        assert ranked[:k] == ["SUBMIT"] * k, ranked
        assert result["shared"]["members"] == 2
        times.append([at for _, _, at in order])
    # Both were admitted over the same stretch, at the account's rate, not each at its own.
    assert min(times[0]) < max(times[1])
    assert min(times[1]) < max(times[0])
    every = sorted(times[0] + times[1])
    rate = (rpm - 1) / (60 + 0.5)  # the bucket's drain: the worker's delay allowance is 0.5 s
    assert every[-1] - every[0] >= 0.8 * (len(every) - 2) / rate
