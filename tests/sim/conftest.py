"""Fixtures that start the simulator over real HTTP and point the real SDK at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient, DefaultAsyncHttpxClient

from runfleet.sim import SimServer, serve

API_KEY = "sk-test-0000000000001234"

StartSim = Callable[..., AbstractAsyncContextManager[SimServer]]


@pytest.fixture
def start_sim() -> StartSim:
    """Return a factory: ``async with start_sim("tools", time_scale=0.01) as sim``."""

    def factory(scenario: Any = "ample", **kwargs: Any) -> AbstractAsyncContextManager[SimServer]:
        kwargs.setdefault("time_scale", 0.01)
        return serve(scenario, **kwargs)

    return factory


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


@pytest.fixture(params=["httpx", "aiohttp"])
def http(request: pytest.FixtureRequest) -> str:
    """Run a test once with the SDK's default httpx client and once with aiohttp."""
    return str(request.param)
