"""A flood of stalled webhook bodies over real sockets: valid deliveries are served meanwhile.

Anyone can open connections to a public webhook endpoint, send headers and a few bytes of
body, and stall, before any signature is checked. The receiver (served by uvicorn, as in
production) holds at most ``max_pending`` bodies being read; past that the one read longest
is answered 408 at once, and any other held body gets its 408 after ``body_timeout``; each
refusal closes its connection. A valid delivery sent while the flood holds every slot comes
with its body, is read at once and answered 200. The flood is another process, as an
attacker is: its sockets and CPU are not the receiver's. Forged, replayed, stale and oversized
deliveries are in ``tests/test_webhooks_forgery.py`` (over 1,000 forgeries, each refused,
nothing changed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet import Fleet
from runfleet.sim import SimApp
from runfleet.sim.server import serve_asgi
from runfleet.webhooks import WebhookReceiver

from ..helpers import API_KEY
from ..test_webhooks_forgery import SECRET, signed
from .stall_flood import __name__ as FLOOD

BODY_TIMEOUT = 1.0
MAX_PENDING = 100


@pytest.mark.parametrize(
    "connections",
    [
        pytest.param(300, id="short", marks=pytest.mark.timeout(60)),
        pytest.param(2000, id="long", marks=[pytest.mark.soak, pytest.mark.timeout(300)]),
    ],
)
async def test_a_valid_delivery_is_served_while_stalled_bodies_hold_every_slot(
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
        async with serve_asgi(receiver) as port:
            flood = await asyncio.create_subprocess_exec(
                sys.executable, "-m", FLOOD, str(port), str(connections),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert flood.stdout is not None
            try:
                assert await asyncio.wait_for(flood.stdout.readline(), 60) == b"open\n"
                delivery = signed(run.id, stamp=int(time.time()))
                async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as hook:
                    sent = time.monotonic()
                    answer = await hook.post("/", content=delivery.body, headers=delivery.headers)
                    answer_s = time.monotonic() - sent
                report = json.loads(await asyncio.wait_for(flood.stdout.readline(), 60))
            finally:
                if flood.returncode is None:
                    flood.kill()
                await flood.wait()
        stats = receiver.stats()
        await run.cancel()
    statuses = {int(k): v for k, v in report["statuses"].items()}
    print(
        f"\nwebhook flood: {connections} stalled bodies from another process (max_pending "
        f"{MAX_PENDING}, body_timeout {BODY_TIMEOUT:g} s): answered {statuses}, "
        f"{report['closed']} closed by the receiver's side, the last released after "
        f"{report['released']:.1f} s; a valid delivery sent while they held every slot: "
        f"{answer.status_code} in {answer_s * 1000:.0f} ms; receiver {stats.rejected}"
    )
    assert answer.status_code == 200  # read and served, not turned away nor held
    # Milliseconds when idle; the loop it shares with the fleet and the test may lag under
    # load (1.0 s once at load 15), never by the flood's body timeouts piled up.
    assert answer_s < BODY_TIMEOUT + 2
    assert stats.woke == 1
    assert statuses == {408: connections}  # each answered, none left hanging
    assert report["closed"] == connections  # no descriptor kept for an unread body
    assert stats.rejected["slow_body"] <= MAX_PENDING
    assert report["released"] < BODY_TIMEOUT + 10
