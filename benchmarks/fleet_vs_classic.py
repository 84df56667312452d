"""The fleet against the classic per-run polling loop, on the same simulated account.

    .venv/bin/python benchmarks/fleet_vs_classic.py [--runs 500] [--scenarios ample,tight]
        [--kinds responses,assistants] [--json FILE]

For each scenario and kind, the simulator (its own process, ``runfleet sim``) is reset with
the same seed, then the same 500 runs go through each strategy, at most 100 in flight at once
(as a batch job runs them):

- ``classic``: one task per run, the widely copied recipe: create, then retrieve after 0.5 s,
  x1.5 up to 5 s, 60 s timeout, SDK defaults (its 2 retries on 429/5xx included).
- ``fleet``: ``runfleet.Fleet`` with default settings and the quota set to the account's RPM
  (``fleet.map`` with ``max_in_flight=100``).

Everything the client waits on is scaled with the simulator (``--time-scale``): a 0.5 s
interval at time scale 2 is 1 s of real time, so both strategies see the same scenario. The
scale keeps the request rate well under the ~250 requests/s one process can send with the
SDK (about 3 ms of CPU each), so the strategies are compared, not the client's CPU.
Figures come from the simulator's own record (``/_sim/stats``), the same clock for both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx2
import openai
import structlog
from openai import AsyncOpenAI

from runfleet import AssistantRunSpec, Backoff, Fleet, PollPolicy, ResponseSpec
from runfleet.sim import load_scenario
from simproc import start_sim

warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
# Real-time scale per scenario: slow enough that the classic loop is not CPU-bound here.
SCALES = {"ample": 2.0, "tight": 1.0}
IN_FLIGHT = 100


async def classic_one(client: AsyncOpenAI, kind: str, i: int, scale: float) -> str:
    """Poll one run the classic way; return its outcome ('ok', 'failed' or 'lost')."""
    delay, deadline = 0.5 * scale, time.monotonic() + 60 * scale
    try:
        if kind == "responses":
            obj: Any = await client.responses.create(model="m", input=f"q{i}", background=True)
        else:
            obj = await client.beta.threads.create_and_run(
                assistant_id="asst_bench",
                thread={"messages": [{"role": "user", "content": f"q{i}"}]},
            )
    except openai.APIError:
        return "lost"
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 5 * scale)
        try:
            if kind == "responses":
                obj = await client.responses.retrieve(obj.id)
            else:
                obj = await client.beta.threads.runs.retrieve(obj.id, thread_id=obj.thread_id)
        except openai.APIError:
            continue
        if obj.status in TERMINAL:
            if obj.status != "completed":
                return "failed"
            if kind == "assistants":
                try:
                    await client.beta.threads.messages.list(obj.thread_id, run_id=obj.id, limit=1)
                except openai.APIError:
                    return "lost"
            return "ok"
    return "lost"


async def classic(client: AsyncOpenAI, kind: str, n: int, scale: float, rpm: float) -> list[str]:
    del rpm  # the classic loop knows no quota
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def bounded(i: int) -> str:
        async with slots:
            return await classic_one(client, kind, i, scale)

    return list(await asyncio.gather(*(bounded(i) for i in range(n))))


async def fleet(client: AsyncOpenAI, kind: str, n: int, scale: float, rpm: float) -> list[str]:
    # The fleet's defaults, scaled like everything else the client waits on. The burst too:
    # the account's sub-minute window (1 s of scenario time on `tight`) lasts `scale` real
    # seconds, so one window's share is rpm / 60 requests, whatever the scale.
    backoff = Backoff(initial=0.5 * scale, cap=5 * scale, min_interval=0.05 * scale)
    policy = PollPolicy(backoff=backoff, stall_unlearned=120 * scale, stall_floor=30 * scale)
    outcomes: list[str] = []
    specs: list[ResponseSpec | AssistantRunSpec] = [
        ResponseSpec("m", f"q{i}")
        if kind == "responses"
        else AssistantRunSpec("asst_bench", f"q{i}")
        for i in range(n)
    ]
    burst = max(1.0, rpm / 60)
    async with Fleet(client, rpm=rpm / scale, burst=burst, policy=policy, seed=1) as f:
        async for handle in f.map(specs, max_in_flight=IN_FLIGHT):
            outcomes.append("failed" if handle.exception() else "ok")
    return outcomes


STRATEGIES = {"classic": classic, "fleet": fleet}


async def measure(url: str, scenario: str, kind: str, strategy: str, n: int) -> dict[str, Any]:
    scale = SCALES[scenario]
    sc = load_scenario(scenario).replace(time_scale=scale)
    async with httpx2.AsyncClient() as http:
        reset = await http.post(f"{url}/_sim/reset", json={"scenario": sc.model_dump()})
        reset.raise_for_status()
        # SDK defaults for the classic loop (2 retries); the fleet copies it with retries off.
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench")
        t0 = time.monotonic()
        async with client:
            outcomes = await STRATEGIES[strategy](client, kind, n, scale, sc.quota.rpm)
        wall = time.monotonic() - t0
        stats = (await http.get(f"{url}/_sim/stats")).json()
    store = stats["responses" if kind == "responses" else "runs"]
    done = n - outcomes.count("lost")
    return {
        "scenario": scenario,
        "kind": kind,
        "strategy": strategy,
        "runs": n,
        "ok": outcomes.count("ok"),
        "failed": outcomes.count("failed"),
        "lost": outcomes.count("lost"),
        "requests": stats["requests_total"],
        "requests_per_run": stats["requests_total"] / max(1, done),
        "polls_per_run": store["retrieves"] / max(1, done),
        "rate_limited": stats["rate_limited"],
        "peak_window": stats["peak_window"]["peak"],
        "quota": stats["peak_window"]["quota"],
        "p50": store["detection"]["p50"],
        "p95": store["detection"]["p95"],
        "wall": wall,
        "time_scale": scale,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | kind | strategy | ok/failed/lost | requests/run | polls/run | 429s "
        "| peak 60 s window / quota | detection p50 / p95 (s) | wall (s) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['kind']} | {r['strategy']} "
            f"| {r['ok']}/{r['failed']}/{r['lost']} "
            f"| {r['requests_per_run']:.2f} | {r['polls_per_run']:.2f} | {r['rate_limited']} "
            f"| {r['peak_window']} / {r['quota']:g} | {r['p50']:.2f} / {r['p95']:.2f} "
            f"| {r['wall']:.0f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--scenarios", default="ample,tight")
    parser.add_argument("--kinds", default="responses,assistants")
    parser.add_argument("--strategies", default="classic,fleet")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    proc, url = start_sim()
    rows = []
    try:
        for scenario in args.scenarios.split(","):
            for kind in args.kinds.split(","):
                for strategy in args.strategies.split(","):
                    row = await measure(url, scenario, kind, strategy, args.runs)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))  # noqa: ASYNC240 - once, at the end


if __name__ == "__main__":
    asyncio.run(main())
