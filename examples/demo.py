"""The same 200 background responses, polled by hand and by a runfleet Fleet.

Starts the simulator in-process with the ``tight`` scenario (600 RPM, enforced per second)
at 4x speed, then runs 200 background responses twice against a freshly reset account:
once with the loop most people write (one task per run, retrieve after 0.5 s, x1.5 up to
5 s, the SDK's own retries), once through one ``Fleet``. The simulator's own record says
what each cost: requests, 429s, the busiest minute against the quota, and how late finished
runs were noticed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
from openai import AsyncOpenAI

from runfleet import Fleet, PollPolicy, ResponseSpec
from runfleet.sim import SimServer, serve

RUNS = 200
SCALE = 0.25  # 4x faster than real time; every interval below is scaled the same way


async def hand_written(client: AsyncOpenAI) -> int:
    """Return how many runs were lost (never seen finished)."""

    async def one(i: int) -> bool:
        delay = 0.5 * SCALE
        try:
            resp = await client.responses.create(model="gpt-5-mini", input=f"q{i}", background=True)
        except openai.APIError:
            return False
        for _ in range(200):
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5 * SCALE)
            try:
                resp = await client.responses.retrieve(resp.id)
            except openai.APIError:
                continue  # a 429 that outlived the SDK's retries: try again later
            if resp.status not in ("queued", "in_progress"):
                return True
        return False

    done = await asyncio.gather(*(one(i) for i in range(RUNS)))
    return done.count(False)


async def with_fleet(client: AsyncOpenAI) -> int:
    """Return how many runs were lost (a handle that ended without an outcome)."""
    policy = PollPolicy().scaled(SCALE)  # the same schedule, in the simulator's faster time
    specs = [ResponseSpec("gpt-5-mini", f"q{i}") for i in range(RUNS)]
    ended = 0
    # 600 requests a scenario minute, 10 in any scenario second: the burst is that second's.
    async with Fleet(client, rpm=600 / SCALE, burst=10, policy=policy, seed=1) as fleet:
        async for _ in fleet.map(specs, max_in_flight=RUNS):
            ended += 1
    return RUNS - ended


async def measure(sim: SimServer, name: str, strategy: Any) -> dict[str, Any]:
    sim.reset(sim.app.scenario)  # same seed, same runs, fresh counters
    client = AsyncOpenAI(base_url=sim.base_url, api_key="sk-demo")  # SDK defaults: 2 retries
    t0 = time.monotonic()
    async with client:
        lost = await strategy(client)
    stats = sim.stats()
    det = stats["responses"]["detection"]
    return {
        "strategy": name,
        "requests": stats["requests_total"],
        "per run": f"{stats['requests_total'] / RUNS:.1f}",
        "429s": stats["rate_limited"],
        "busiest minute": f"{stats['peak_window']['peak']}/{stats['peak_window']['quota']:g}",
        "p95 noticed late": f"{det['p95']:.1f} s",
        "lost": lost,
        "wall": f"{time.monotonic() - t0:.0f} s",
    }


async def main() -> None:
    async with serve("tight", time_scale=SCALE) as sim:
        print(f"simulator: scenario 'tight' (600 RPM, per second) at 4x speed on {sim.base_url}")
        print(f"{RUNS} background responses, polled two ways...\n")
        rows = [
            await measure(sim, "hand-written loop", hand_written),
            await measure(sim, "runfleet Fleet", with_fleet),
        ]
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in cols))
    print("\n(times are scenario seconds; 'busiest minute' is requests in any 60 s vs the quota)")


if __name__ == "__main__":
    asyncio.run(main())
