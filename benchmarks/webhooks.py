"""Polling against webhooks for Responses runs, on the same simulated account.

    .venv/bin/python benchmarks/webhooks.py [--runs 500] [--scale 0.5] [--drops 0,0.2]
        [--json FILE]

The simulator runs in its own process (uvicorn with uvloop, ``runfleet.sim.server.run``),
so its CPU is not the fleet's; it sends signed webhooks from its own sender loop. The fleet
and its :class:`~runfleet.webhooks.WebhookReceiver` share this process, the receiver served
by uvicorn on loopback, as in a deployment. For each row the simulator is reset with the
``ample`` scenario and the same seed, then the same N background responses go through:

- ``polling``: ``Fleet`` with its defaults (learned schedule), scaled like everything else;
- ``webhooks``: ``Fleet(webhooks=True)``, safety-net poll every 60 scenario seconds (±20 %),
  with the given fraction of deliveries dropped by the simulator (never retried: lost).

At most 100 runs are in flight, as a batch job runs them. Every duration the client waits on
is multiplied by ``--scale`` like the simulator's, so all figures are in scenario time. The
webhook delay is the scenario default (lognormal, median 0.05 s, sigma 0.5). Figures come from
the simulator's record (``/_sim/stats``): polls per run (retrieves / runs), detection latency
(from a run's end to the retrieve that saw it), and lost runs (handles that ended otherwise
than with a result or the run's own failure).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import secrets
import sys
import time
from typing import Any

import httpx2
import structlog
from openai import AsyncOpenAI

from runfleet import Backoff, Fleet, PollPolicy, ResponseSpec, RunFailed, RunIncomplete
from runfleet.sim import load_scenario
from runfleet.sim.server import serve_asgi
from runfleet.webhooks import WebhookReceiver
from simproc import start_sim

IN_FLIGHT = 100
SAFETY_POLL = 60.0  # scenario seconds


async def measure(url: str, n: int, scale: float, drop: float | None) -> dict[str, Any]:
    """Run N responses through one strategy (drop None: polling); return the figures."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    backoff = Backoff(initial=0.5 * scale, cap=5 * scale, min_interval=0.05 * scale)
    policy = PollPolicy(backoff=backoff, stall_unlearned=120 * scale, stall_floor=30 * scale)
    sc = load_scenario("ample").replace(time_scale=scale)
    async with httpx2.AsyncClient() as http:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench")
        kwargs: dict[str, Any] = {"webhooks": drop is not None, "safety_poll": SAFETY_POLL * scale}
        outcomes: list[str] = []
        t0 = time.monotonic()
        async with (
            client,
            Fleet(client, rpm=sc.quota.rpm / scale, policy=policy, seed=1, **kwargs) as fleet,
        ):
            receiver = WebhookReceiver(fleet, secret=secret)
            async with serve_asgi(receiver) as port:
                if drop is not None:
                    hooks = {"url": f"http://127.0.0.1:{port}/", "secret": secret, "drop": drop}
                    sc = sc.replace(webhooks=hooks)
                reset = await http.post(f"{url}/_sim/reset", json={"scenario": sc.model_dump()})
                reset.raise_for_status()
                specs = [ResponseSpec("gpt-5-mini", f"q{i}") for i in range(n)]
                async for handle in fleet.map(specs, max_in_flight=IN_FLIGHT):
                    error = handle.exception()
                    ok = error is None or isinstance(error, RunFailed | RunIncomplete)
                    outcomes.append("ok" if ok else "lost")
        wall = time.monotonic() - t0
        stats = (await http.get(f"{url}/_sim/stats")).json()
    store, det = stats["responses"], stats["responses"]["detection"]
    done = max(1, n - outcomes.count("lost"))
    return {
        "strategy": "polling" if drop is None else f"webhooks, {drop:.0%} dropped",
        "runs": n,
        "lost": outcomes.count("lost"),
        "polls_per_run": store["retrieves"] / done,
        "requests_per_run": stats["requests_total"] / done,
        "p50": det["p50"],
        "p95": det["p95"],
        "max": det["max"],
        "mean": det["mean"],
        "webhooks": stats["webhooks"],
        "receiver": dataclasses.asdict(receiver.stats()) if drop is not None else None,
        "wall": wall,
        "time_scale": scale,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| strategy | runs | lost | polls/run | requests/run "
        "| detection p50 / p95 / mean / max (s) | wall (s) |"
    )
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['runs']} | {r['lost']} | {r['polls_per_run']:.2f} "
            f"| {r['requests_per_run']:.2f} "
            f"| {r['p50']:.2f} / {r['p95']:.2f} / {r['mean']:.2f} / {r['max']:.1f} "
            f"| {r['wall']:.0f} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    proc, url = start_sim("--scenario", "ample")
    rows = []
    try:
        strategies: list[float | None] = [None, *(float(d) for d in args.drops.split(","))]
        for drop in strategies:
            row = await measure(url, args.runs, args.scale, drop)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait()
    return rows


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--scale", type=float, default=0.5, help="real seconds per scenario s")
    parser.add_argument("--drops", default="0,0.2", help="dropped fractions to run")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    rows = asyncio.run(main(args))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    cli()
