"""One OS process of the shared-limits tests: a fleet that runs N responses, then says how.

Run as ``python -m tests.shared_worker BASE_URL --runs N ...`` from the repository root; it
prints one JSON line (its runs, its 429s, its shared store's view). Several of these against
one simulator and one Redis are the "many processes, one account" of invariant 9. With
``--priorities K`` it queues K polls, K creates and K submits (in that order) on its own
request quota instead, and prints the order they were admitted in.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from typing import Any

import anyio
from openai import AsyncOpenAI

from runfleet import Fleet, PollPolicy, RedisLimits, RequestQuota, ResponseSpec, RunfleetError
from runfleet.admission.quota import Priority

from .helpers import API_KEY


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the fleet; return its figures."""
    client = AsyncOpenAI(base_url=args.base_url, api_key=API_KEY, max_retries=0)
    shared = None
    if args.redis:
        shared = RedisLimits(args.redis, account="tests", on_failure=args.on_failure)
    # Requests admitted half a second apart may arrive together on a loaded machine (two
    # cores, other suites running): the quota holds that much back from its burst.
    quota = RequestQuota(
        args.rpm, burst=args.burst, tpm=args.tpm, delay_allowance=0.5, shared=shared
    )
    extra = {} if args.max_output is None else {"max_output_tokens": args.max_output}
    if shared is not None:
        await shared.connect()  # reached once: an outage from here on is the policy's
    # Start together, so that the processes really compete: importing the SDK takes seconds
    # on a loaded machine, so each says when it is ready and waits for the word.
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    if args.priorities:
        return await admit_in_order(quota, args.priorities)
    specs = [
        ResponseSpec.of("gpt-5-mini", "x" * args.prompt_chars, None, None, (), extra)
        for _ in range(args.runs)
    ]
    done = failed = 0
    async with (
        client,
        Fleet(
            client,
            rpm=args.rpm,
            quota=quota,
            policy=PollPolicy().scaled(args.scale),
            seed=args.seed,
        ) as fleet,
    ):
        async for handle in fleet.map(specs, max_in_flight=args.runs):
            try:
                await handle
                done += 1
            except RunfleetError:  # a failed run, or one the policy refused (RedisUnavailable)
                failed += 1
        quota = fleet.stats().quota
    assert quota is not None
    return {
        "done": done,
        "failed": failed,
        "rate_limited": quota.rate_limited,
        "token_rate_limited": quota.tokens.rate_limited if quota.tokens else 0,
        "shared": None if quota.shared is None else dataclasses.asdict(quota.shared),
    }


async def admit_in_order(quota: RequestQuota, k: int) -> dict[str, Any]:
    """Queue k polls, k creates, k submits at once; return who went when (wall clock)."""
    order: list[tuple[str, bool, float]] = []
    queued = 0

    async def one(priority: Priority) -> None:
        nonlocal queued
        queued += 1
        await quota.acquire(priority)
        # Whether every waiter was queued when this one went: before that, the first caller
        # may be admitted alone, with nothing to be ordered against.
        order.append((priority.name, queued == 3 * k, time.time()))

    try:
        async with anyio.create_task_group() as tg:
            for priority in [Priority.POLL] * k + [Priority.CREATE] * k + [Priority.SUBMIT] * k:
                tg.start_soon(one, priority)
    finally:
        await quota.aclose()
    shared = quota.stats().shared
    return {"order": order, "shared": None if shared is None else dataclasses.asdict(shared)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--rpm", type=float, required=True)
    parser.add_argument("--burst", type=float)
    parser.add_argument("--tpm", type=float)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--redis", default="")
    parser.add_argument("--on-failure", default="fail_closed")
    parser.add_argument("--prompt-chars", type=int, default=8)
    parser.add_argument("--max-output", type=int)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--priorities", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))), flush=True)
