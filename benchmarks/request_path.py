"""Which of runfleet's modules and wings one ``fleet.respond(...)`` crosses, call to result.

A measure of how far a reader must follow a request: every module of ``runfleet`` (the
simulator excluded) whose code runs while one background response is created, polled to its
end, and returned. The simulator runs in-process behind the SDK's real HTTP stack (an ASGI
transport), with a short lifecycle so the response is polled a few times.

    .venv/bin/python benchmarks/request_path.py
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from types import FrameType
from typing import Any

import httpx2
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet import Fleet
from runfleet.sim import SimApp


async def main() -> None:
    app = SimApp({"seed": 1, "time_scale": 0.05, "lifecycle": {"queued": 0.2, "in_progress": 2}})
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key="sk-path-0000", http_client=http)
    crossed: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        del arg
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if module.startswith("runfleet") and not module.startswith("runfleet.sim"):
            crossed[module] += 1

    async with client, Fleet(client, rpm=60_000, seed=1) as fleet:
        await fleet.respond(model="warm-up", input="x")  # imports and first-use paths
        sys.setprofile(profile)
        try:
            result = await fleet.respond(model="gpt-5-mini", input="hello")
        finally:
            sys.setprofile(None)
    wings = sorted({".".join(m.split(".")[:2]) for m in crossed})
    print(
        f"one fleet.respond() ({result.figures.polls} polls): {len(crossed)} modules crossed, "
        f"in {len(wings)} wings: {', '.join(w.removeprefix('runfleet.') for w in wings)}"
    )
    for module, calls in sorted(crossed.items()):
        print(f"  {module:40} {calls:5} calls")


if __name__ == "__main__":
    asyncio.run(main())
