"""The webhook relay between replicas that are separate OS processes, on one Redis.

Replica B (``tests/relay_worker.py receiver``) is where the simulator delivers every event;
replica A (``owner``) runs the responses. Each is its own interpreter with its own fleet,
relay and Redis connections. A's safety-net poll (600 s) is far beyond the test, so a run
that ends after one retrieve was woken by the event B relayed to A's process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from asyncio.subprocess import PIPE, Process
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from .helpers import StartSim
from .relay_worker import SECRET

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent
FAST = {"lifecycle": {"queued": 0.2, "in_progress": {"dist": "uniform", "low": 1, "high": 3}}}


async def replica(base_url: str, redis_url: str, role: str, *args: str) -> tuple[Process, str]:
    """Start one replica; return it and its ``ready`` line once it is up."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.relay_worker", base_url, redis_url, role, *args,
        cwd=ROOT, stdin=PIPE, stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    if not line.startswith("ready"):
        _, err = await proc.communicate()
        pytest.fail(f"{role} did not start: {err.decode()[-2000:]}")
    return proc, line


async def finish(proc: Process) -> dict[str, Any]:
    out, err = await proc.communicate(b"go\n")
    assert proc.returncode == 0, err.decode()[-2000:]
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.timeout(120)
async def test_an_event_delivered_to_another_process_wakes_the_run_in_its_owner(
    start_sim: StartSim, redis_url: str
) -> None:
    async with start_sim(FAST) as sim:
        receiver, ready = await replica(sim.base_url, redis_url, "receiver")
        url = f"http://127.0.0.1:{ready.split()[1]}/webhooks/openai"
        sim.reset(sim.app.scenario.replace(webhooks={"url": url, "secret": SECRET}))
        owner, _ = await replica(sim.base_url, redis_url, "owner", "--runs", "10")
        ran = await finish(owner)
        got = await finish(receiver)
        retrieves = sim.stats()["responses"]["retrieves"]
        async with aredis.Redis.from_url(redis_url) as r:
            left = [k async for k in r.scan_iter(match="runfleet:*owner:*")]
    assert ran["statuses"] == ["completed"] * 10
    assert ran["polls"] == [1] * 10  # the relayed event's retrieve, not the safety net's
    assert retrieves == 10
    assert ran["woken"] == 10
    assert got["relayed"] == 10
    assert got["woke"] == 0  # B's own fleet owns none of them
    assert left == []  # each run gave its owner record up as it ended
