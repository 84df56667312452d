"""Session-wide test setup; keep it to what no single test module can do for itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from runfleet.sim import SimServer, serve

from .helpers import StartSim
from .redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def _no_implicit_event_loop() -> None:
    """Stop Python from creating an event loop that no test owns.

    looptime 0.9 asks the loop policy for the current loop before every test, sync ones too.
    Until the first async test has run, Python 3.11 answers by creating a loop that nobody
    closes; its ResourceWarning then surfaces in whichever later test the garbage collector
    happens to run in, and ``filterwarnings = ["error"]`` fails that test. Declaring "no current
    loop" once makes the policy raise instead, which looptime expects and ignores.
    """
    asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _runfleet_logs_on() -> Iterator[None]:
    """Let every runfleet event reach ``capture_logs()``, and undo what a test configured.

    runfleet's loggers skip levels the standard library has disabled before any processor
    runs, so without this a test would capture warnings only. A test that runs the command
    in-process leaves its stderr handler and level behind; they go with the test.
    """
    logger = logging.getLogger("runfleet")
    handlers, level = logger.handlers[:], logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture
def start_sim() -> StartSim:
    """Return a factory: ``async with start_sim("tools", time_scale=0.01) as sim``."""

    def factory(scenario: Any = "ample", **kwargs: Any) -> AbstractAsyncContextManager[SimServer]:
        kwargs.setdefault("time_scale", 0.01)
        return serve(scenario, **kwargs)

    return factory


@pytest.fixture(params=["httpx", "aiohttp"])
def http(request: pytest.FixtureRequest) -> str:
    """Run a test once with the SDK's default httpx client and once with aiohttp."""
    return str(request.param)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis server of the test's own, on a free port; stopped after the test."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a fresh real Redis server (``redis://127.0.0.1:PORT/0``)."""
    return redis_server.url
