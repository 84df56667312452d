"""One OS process of the shared-limits tests: a fleet that runs N responses, then says how.

Run as ``python -m tests.shared_worker BASE_URL --runs N ...`` from the repository root; it
prints one JSON line (its runs, its 429s, its shared store's view). Several of these against
one simulator and one Redis are the "many processes, one account" of invariant 9.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from openai import AsyncOpenAI

from runfleet import Fleet, PollPolicy, RedisLimits, RequestQuota, ResponseSpec, RunfleetError

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
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))), flush=True)
