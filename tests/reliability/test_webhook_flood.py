"""A flood of stalled webhook bodies over real sockets: valid deliveries still get through.

Anyone can open connections to a public webhook endpoint, send headers and a few bytes of
body, and stall, before any signature is checked. The receiver (served by uvicorn, as in
production) must answer each held body 408 after ``body_timeout``, turn away new ones past
``max_pending`` with 503 without reading them (no file descriptor held for long), and
answer a valid delivery at once meanwhile: 200, or 503 while full, which OpenAI retries.
Forged, replayed, stale and oversized deliveries are in ``tests/test_webhooks_forgery.py``
(over 1,000 forgeries, each refused, nothing changed).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx2
import pytest
import uvicorn
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet import Fleet
from runfleet.sim import SimApp
from runfleet.webhooks import WebhookReceiver

from ..helpers import API_KEY
from ..test_webhooks_forgery import SECRET, signed

BODY_TIMEOUT = 1.0
MAX_PENDING = 100
STALL = (
    b"POST / HTTP/1.1\r\nHost: hook\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n" + b'{"type": "r'
)


async def stalled(port: int) -> int:
    """Send headers and 10 bytes of a 1,000-byte body, then wait; return the status answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(STALL)
        await writer.drain()
        line = await reader.readline()
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()


@pytest.mark.parametrize(
    "connections",
    [
        pytest.param(150, id="short", marks=pytest.mark.timeout(120)),
        pytest.param(900, id="long", marks=[pytest.mark.soak, pytest.mark.timeout(600)]),
    ],
)
async def test_stalled_bodies_are_released_and_a_valid_delivery_gets_through(
    connections: int,
) -> None:
    app = SimApp({"seed": 5, "lifecycle": {"queued": 0, "in_progress": 3600}})
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    async with client, Fleet(client, rpm=6000, webhooks=True, seed=1) as fleet:
        run = await fleet.submit_response(model="m", input="x")
        receiver = WebhookReceiver(
            fleet, secret=SECRET, body_timeout=BODY_TIMEOUT, max_pending=MAX_PENDING
        )
        config = uvicorn.Config(receiver, host="127.0.0.1", port=0, log_level="error")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            began = time.monotonic()
            flood = [asyncio.create_task(stalled(port)) for _ in range(connections)]
            await asyncio.sleep(0)  # let them connect before the valid delivery
            delivery = signed(run.id, stamp=int(time.time()))
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as hook:
                sent = time.monotonic()
                first = await hook.post("/", content=delivery.body, headers=delivery.headers)
                first_s = time.monotonic() - sent
                statuses = Counter(await asyncio.gather(*flood))
                released_s = time.monotonic() - began
                # OpenAI retries a non-2xx delivery: the retry finds the receiver free.
                answer = await hook.post("/", content=delivery.body, headers=delivery.headers)
        finally:
            server.should_exit = True
            await serving
        stats = receiver.stats()
        await run.cancel()
    print(
        f"\nwebhook flood: {connections} stalled bodies (max_pending {MAX_PENDING}, "
        f"body_timeout {BODY_TIMEOUT:g} s): answered {dict(statuses)}, all released after "
        f"{released_s:.1f} s; a valid delivery meanwhile: {first.status_code} in "
        f"{first_s * 1000:.0f} ms, its retry after: {answer.status_code}; receiver "
        f"{stats.rejected}"
    )
    assert first.status_code in (200, 503)  # answered at once either way, never held
    assert first_s < BODY_TIMEOUT
    assert answer.status_code == 200
    assert stats.woke == 1
    assert set(statuses) <= {408, 503}
    assert sum(statuses.values()) == connections
    assert statuses[408] <= MAX_PENDING
    assert released_s < BODY_TIMEOUT + 10
