"""The one door: a poll admitted ahead of its run holds a slot until it is spent or released."""

from __future__ import annotations

import anyio
import httpx2
import openai
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet.admission.gate import RequestGate, RequestKind
from runfleet.admission.quota import RequestQuota
from runfleet.sim import SimApp
from runfleet.stats import StatsCollector


async def test_a_ticket_holds_a_slot_until_released_once() -> None:
    gate = RequestGate(RequestQuota(6000), StatsCollector(), concurrency=1)
    ticket = await gate.admit(RequestKind.RETRIEVE)
    assert gate.limiter.borrowed_tokens == 1
    with anyio.move_on_after(0.2) as waited:  # the only slot is held: nothing else gets in
        await gate.admit(RequestKind.RETRIEVE)
    assert waited.cancelled_caught
    ticket.release()
    ticket.release()  # a second release gives back nothing it does not hold
    assert gate.limiter.borrowed_tokens == 0
    (await gate.admit(RequestKind.CREATE)).release()


async def test_a_spent_ticket_frees_its_slot_whether_the_request_succeeds_or_fails() -> None:
    app = SimApp({"seed": 3})
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key="sk-gate-0000", http_client=http)
    stats = StatsCollector()
    gate = RequestGate(RequestQuota(6000), stats, concurrency=1)
    async with client:
        created, _ = await gate.send(
            RequestKind.CREATE,
            lambda: client.responses.with_raw_response.create(
                model="m", input="hi", background=True
            ),
        )
        ticket = await gate.admit(RequestKind.RETRIEVE)
        seen, headers = await gate.send(
            ticket, lambda: client.responses.with_raw_response.retrieve(created.id)
        )
        assert seen.id == created.id
        assert headers is not None
        assert gate.limiter.borrowed_tokens == 0
        ticket = await gate.admit(RequestKind.RETRIEVE)
        with pytest.raises(openai.NotFoundError):  # counted, and the slot is back
            await gate.send(ticket, lambda: client.responses.with_raw_response.retrieve("nope"))
        assert gate.limiter.borrowed_tokens == 0
    snap = stats.snapshot(anyio.current_time(), {}, None)
    assert snap.requests == {"create": 1, "retrieve": 2}
