"""Helpers shared by the tests: the real SDK pointed at the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from openai import AsyncOpenAI, DefaultAioHttpClient, DefaultAsyncHttpxClient

from runfleet import Fleet, RunHandle
from runfleet.sim import SimServer

API_KEY = "sk-test-0000000000001234"

StartSim = Callable[..., AbstractAsyncContextManager[SimServer]]


@asynccontextmanager
async def sdk(sim: SimServer, http: str = "httpx", **kwargs: Any) -> AsyncIterator[AsyncOpenAI]:
    """Yield the real SDK client pointed at the simulator, SDK retries off."""
    http_client = DefaultAioHttpClient() if http == "aiohttp" else DefaultAsyncHttpxClient()
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("max_retries", 0)
    client = AsyncOpenAI(base_url=sim.base_url, http_client=http_client, **kwargs)
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def fleet_on(sim: SimServer, http: str = "httpx", **kwargs: Any) -> AsyncIterator[Fleet]:
    """Yield a running fleet whose client talks to the simulator.

    The fleet's quota defaults to the simulator's, converted to real minutes.
    """
    kwargs.setdefault("rpm", sim.app.scenario.quota.rpm / sim.app.scenario.time_scale)
    kwargs.setdefault("seed", 7)
    async with sdk(sim, http) as client, Fleet(client, **kwargs) as fleet:
        yield fleet


async def start(fleet: Fleet, kind: str, prompt: str = "hi", **kwargs: Any) -> RunHandle:
    """Start one run of either kind with the same words, so one test covers both."""
    if kind == "responses":
        return await fleet.submit_response(model="gpt-5-mini", input=prompt, **kwargs)
    return await fleet.submit_run(assistant_id="asst_test", prompt=prompt, **kwargs)
