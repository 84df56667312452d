"""Smoke run of the simulator: what a hand-written polling loop costs and how late it notices.

Starts ``runfleet.sim`` in-process with the ``tools`` scenario sped up 4x, starts 50
background responses and 10 legacy Assistants runs with the real SDK, answers their tool
calls, and polls each one every 500 ms (2 s of scenario time) the way most hand-written
loops do. Then it prints
what the simulator saw: requests by endpoint, 429s, and how late finished runs were noticed.
"""

from __future__ import annotations

import asyncio
import warnings

import openai
from openai import AsyncOpenAI

from runfleet.sim import serve

warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}}  # fmt: skip


async def poll_response(client: AsyncOpenAI, prompt: str) -> str:
    resp = await client.responses.create(
        model="gpt-5-mini",
        input=prompt,
        background=True,
        tools=[TOOL],  # type: ignore[list-item]
    )
    while True:
        await asyncio.sleep(0.5)
        try:
            resp = await client.responses.retrieve(resp.id)
        except openai.RateLimitError:
            continue
        if resp.status in ("queued", "in_progress"):
            continue
        calls = [o for o in resp.output if o.type == "function_call"]
        if not calls:
            return resp.status
        resp = await client.responses.create(
            model="gpt-5-mini", background=True, previous_response_id=resp.id,
            tools=[TOOL],  # type: ignore[list-item]
            input=[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"}
                   for c in calls],
        )  # fmt: skip


async def poll_run(client: AsyncOpenAI, prompt: str) -> str:
    run = await client.beta.threads.create_and_run(
        assistant_id="asst_demo", thread={"messages": [{"role": "user", "content": prompt}]}
    )
    while run.status not in ("completed", "failed", "cancelled", "expired", "incomplete"):
        await asyncio.sleep(0.5)
        try:
            run = await client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
            if run.status == "requires_action" and run.required_action:
                calls = run.required_action.submit_tool_outputs.tool_calls
                run = await client.beta.threads.runs.submit_tool_outputs(
                    run.id, thread_id=run.thread_id,
                    tool_outputs=[{"tool_call_id": c.id, "output": "42"} for c in calls],
                )  # fmt: skip
        except openai.BadRequestError:
            continue  # outputs already in: the run shows requires_action a moment longer
        except openai.RateLimitError:
            continue
    return run.status


async def main() -> None:
    async with serve("tools", time_scale=0.25) as sim:
        print(f"simulator: scenario 'tools' at 4x speed on {sim.base_url}")
        client = AsyncOpenAI(base_url=sim.base_url, api_key="sk-demo", max_retries=5)
        async with client:
            jobs = [poll_response(client, f"Weather in city {i}?") for i in range(50)]
            jobs += [poll_run(client, f"Order {i}?") for i in range(10)]
            outcomes = await asyncio.gather(*jobs)
        stats = sim.stats()
    print(f"runs finished: {len(outcomes)} ({outcomes.count('completed')} completed)")
    print(f"requests: {stats['requests_total']}, of which 429: {stats['rate_limited']}")
    for endpoint, count in stats["requests"].items():
        print(f"  {endpoint:28} {count}")
    for kind in ("responses", "runs"):
        det = stats[kind]["detection"]
        print(
            f"{kind}: detection latency p50 {det['p50']:.2f} s, p95 {det['p95']:.2f} s "
            f"(scenario seconds), {stats[kind]['retrieves']} retrieves"
        )
    print("peak requests in a 60 s window:", stats["peak_window"]["peak"])


if __name__ == "__main__":
    asyncio.run(main())
