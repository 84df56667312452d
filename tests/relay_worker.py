"""One replica of a service, in its own OS process, for the webhook relay's process test.

Run as ``python -m tests.relay_worker BASE_URL REDIS_URL owner|receiver [--runs N]`` from
the repository root. Each is a fleet (webhooks on, its safety-net poll far beyond the test)
with its relay on the one Redis. The *receiver* serves its :class:`WebhookReceiver` on a
loopback port (printed as ``ready PORT``) until told to stop, then prints its receiver's
figures. The *owner* runs N responses once told to go and prints what each cost.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from openai import AsyncOpenAI

from runfleet import Fleet
from runfleet.relay import WebhookRelay
from runfleet.sim.server import serve_asgi
from runfleet.webhooks import WebhookReceiver

from .helpers import API_KEY

SECRET = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NTY="


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Be one replica until done; return its figures."""
    client = AsyncOpenAI(base_url=args.base_url, api_key=API_KEY, max_retries=0)
    async with (
        client,
        Fleet(client, rpm=6000, webhooks=True, safety_poll=600.0, seed=args.seed) as fleet,
        WebhookRelay(fleet, args.redis, owner_ttl=3.0) as relay,
    ):
        if args.role == "receiver":
            receiver = WebhookReceiver(fleet, secret=SECRET, relay=relay)
            async with serve_asgi(receiver) as port:
                print(f"ready {port}", flush=True)
                await asyncio.to_thread(sys.stdin.readline)
            return dataclasses.asdict(receiver.stats())
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        handles = [
            await fleet.submit_response(model="gpt-5-mini", input=str(i)) for i in range(args.runs)
        ]
        results = [await h for h in handles]
        return {
            "statuses": [r.status for r in results],
            "polls": [r.figures.polls for r in results],
            "woken": relay.woken,
        }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("redis")
    parser.add_argument("role", choices=["owner", "receiver"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))), flush=True)
