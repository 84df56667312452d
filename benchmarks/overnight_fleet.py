"""Polls per run and detection latency of the fleet in a discounted window (``overnight``).

Starts the simulator in-process on the built-in ``overnight`` scenario (8h queues of 2 h
median, a third of the runs with one or two tool rounds), submits ``--runs`` responses in one
window with the scenario's tools answered, and prints polls per run and the p95 detection
latency in scenario seconds: over all runs (a chain's responses summed) and over runs without
tool rounds (one response each). Failed runs (1 % in the scenario) are left out.

    .venv/bin/python benchmarks/overnight_fleet.py --time-scale 0.001 --runs 200 --window 8h
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet import Fleet, PollPolicy, RunfleetError, RunResult, tool
from runfleet.sim.server import serve


@tool
async def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


@tool
async def lookup_order(order_id: str) -> str:
    """An order's state."""
    return f"{order_id} shipped"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.95 * (len(ordered) - 1))]


async def main(scale: float, runs: int, window: str) -> None:
    async with serve("overnight", time_scale=scale) as sim:
        http = DefaultAsyncHttpxClient()
        client = AsyncOpenAI(
            base_url=sim.base_url, api_key="sk-bench-0000", max_retries=0, http_client=http
        )
        policy = PollPolicy().scaled(scale)
        tools = [get_weather, lookup_order]
        async with Fleet(client, rpm=30000 / scale, policy=policy, tools=tools, seed=1) as fleet:
            chosen = None if window == "soonest" else window
            handles = [
                await fleet.submit_response(
                    model="gpt-5-mini", input=f"q{i}", completion_window=chosen
                )
                for i in range(runs)
            ]
            results: list[RunResult] = []
            for handle in handles:
                try:
                    results.append(await handle)
                except RunfleetError:
                    continue
        await client.close()
    polls = [r.figures.polls for r in results]
    latency = [r.figures.detection_latency / scale for r in results]
    single = [r.figures.detection_latency / scale for r in results if not r.tool_rounds]
    print(f"window {window}, {len(results)} runs done of {runs}, time scale {scale}")
    print(f"polls per run: mean {statistics.mean(polls):.2f}, max {max(polls)}")
    print(
        f"p95 detection latency: {p95(latency):.0f} s (a chain's responses summed); "
        f"{p95(single):.0f} s over the {len(single)} runs without tool rounds"
    )
    windows = sim.stats()["responses"]["windows"]
    print(windows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=0.001)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--window", choices=("soonest", "2h", "8h"), default="8h")
    args = parser.parse_args()
    asyncio.run(main(args.time_scale, args.runs, args.window))
