"""Webhook events reach the replica that owns the run, through a real Redis server.

Two replicas, each a fleet with its own relay, share one simulator and one Redis. The
simulator delivers every event to replica B's receiver (the load balancer's pick) while
replica A owns the runs; A's safety-net poll is far beyond the test, so a run that ends after
one retrieve was woken by the event B relayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from runfleet import Fleet
from runfleet.relay import RelayError, WebhookRelay
from runfleet.sim import SimServer
from runfleet.sim.server import serve_asgi
from runfleet.webhooks import WebhookReceiver

from .helpers import StartSim, fleet_on, sdk, start
from .redis_server import RedisServer, free_port

SECRET = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NTY="
FAST = {"lifecycle": {"queued": 0.2, "in_progress": {"dist": "uniform", "low": 1, "high": 3}}}
SLOW = {"lifecycle": {"queued": 0.2, "in_progress": {"dist": "uniform", "low": 400, "high": 500}}}


@asynccontextmanager
async def replicas(
    sim: SimServer, redis_url: str, **hooks: Any
) -> AsyncIterator[tuple[Fleet, WebhookRelay, WebhookReceiver, WebhookRelay]]:
    """Yield replica A (fleet, relay) and replica B (receiver, relay); events go to B."""
    async with (
        fleet_on(sim, webhooks=True, safety_poll=600.0) as fleet_a,
        WebhookRelay(fleet_a, redis_url, owner_ttl=3.0) as relay_a,
        fleet_on(sim, webhooks=True, safety_poll=600.0) as fleet_b,
        WebhookRelay(fleet_b, redis_url, owner_ttl=3.0) as relay_b,
    ):
        receiver_b = WebhookReceiver(fleet_b, secret=SECRET, relay=relay_b)
        async with serve_asgi(receiver_b) as port:
            url = f"http://127.0.0.1:{port}/webhooks/openai"
            settings = {"url": url, "secret": SECRET, **hooks}
            sim.reset(sim.app.scenario.replace(webhooks=settings))
            yield fleet_a, relay_a, receiver_b, relay_b


async def owner_keys(redis_url: str) -> list[bytes]:
    async with aioredis.Redis.from_url(redis_url) as r:
        return [k async for k in r.scan_iter(match="runfleet:*owner:*")]


async def test_an_event_received_by_the_wrong_replica_wakes_the_run_in_the_owner(
    start_sim: StartSim, redis_url: str
) -> None:
    async with start_sim(FAST) as sim, replicas(sim, redis_url) as (fleet, relay_a, recv, _):
        handles = [await start(fleet, "responses", str(i)) for i in range(10)]
        results = [await h for h in handles]
        # Each run gives its record up as it ends; the relay's writer sends that a moment later.
        with anyio.fail_after(5):
            while await owner_keys(redis_url):  # noqa: ASYNC110 - Redis state; no event exposes it
                await anyio.sleep(0.01)
        retrieves = sim.stats()["responses"]["retrieves"]
    assert all(r.status == "completed" for r in results)
    assert [r.figures.polls for r in results] == [1] * 10  # the relayed event's retrieve
    assert retrieves == 10
    stats = recv.stats()
    assert stats.relayed == 10
    assert stats.woke == 0  # B's own fleet owns none of them
    assert stats.events == {"response.completed": {"relayed": 10}}
    assert relay_a.woken == 10


async def test_an_event_with_no_owner_alive_waits_for_whoever_waits_on_it_later(
    start_sim: StartSim, redis_url: str
) -> None:
    async with start_sim(SLOW) as sim, sdk(sim) as client:
        response = await client.responses.create(model="m", input="hi", background=True)
        with capture_logs() as logs:
            # A replica that only receives: its fleet has no webhooks, which the relay says.
            async with fleet_on(sim) as fleet_b, WebhookRelay(fleet_b, redis_url) as relay_b:
                # Delivered while no replica waits on it (the owner died, the batch not resumed).
                assert await relay_b.publish(response.id, "response.completed") is None
        assert [e["event"] for e in logs] == ["relay_fleet_without_webhooks"]
        async with (
            fleet_on(sim, webhooks=True, safety_poll=600.0) as fleet,
            WebhookRelay(fleet, redis_url) as relay,
        ):
            handle = fleet.watch(response_id=response.id)
            # Attaching polls once (in progress), then it waits and finds the event: one more.
            with anyio.fail_after(10):
                while relay.woken == 0:  # noqa: ASYNC110 - a counter; no event exposes it
                    await anyio.sleep(0.01)
            async with aioredis.Redis.from_url(redis_url) as r:
                assert await r.keys("runfleet:*pending:*") == []  # taken, not left to expire
            await handle.cancel()
    assert relay.woken == 1


async def test_a_stale_owner_is_seen_as_none_and_dropped(
    start_sim: StartSim, redis_url: str
) -> None:
    """An owner record whose replica stopped beating: the event waits; the record goes."""
    async with start_sim() as sim, fleet_on(sim) as fleet:
        async with WebhookRelay(fleet, redis_url, namespace="svc") as relay:
            async with aioredis.Redis.from_url(redis_url) as r:
                await r.set("runfleet:{svc}:owner:resp_1", "dead-replica")
                assert await relay.publish("resp_1", "response.completed") is None
                assert await r.get("runfleet:{svc}:owner:resp_1") is None
                assert await r.get("runfleet:{svc}:pending:resp_1") == b"response.completed"
                assert 0 < await r.pttl("runfleet:{svc}:pending:resp_1") <= 86_400_000


async def test_an_unreachable_redis_is_one_clear_error(start_sim: StartSim) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with start_sim() as sim, fleet_on(sim) as fleet:
        with pytest.raises(RelayError, match=r"cannot reach Redis at redis://127\.0\.0\.1") as err:
            async with WebhookRelay(fleet, url):
                pass
    assert "\n" not in str(err.value)


async def test_a_redis_restarted_empty_still_gets_the_event_to_the_owner(
    start_sim: StartSim, redis_server: RedisServer
) -> None:
    """While Redis is down, B answers 503 and forgets the event's id, so OpenAI's retry is
    applied, not taken for a duplicate; A writes its owner records again once Redis is back
    (empty: no persistence), and the retried event reaches it."""
    retry = {"retries": 20, "retry_delay": 30}  # 0.3 s, doubling, at the sim's 0.01 scale
    async with (
        start_sim(FAST) as sim,
        replicas(sim, redis_server.url, **retry) as (fleet, relay_a, recv, _),
    ):
        redis_server.stop()
        handle = await start(fleet, "responses")
        with anyio.fail_after(20):
            while recv.stats().rejected.get("relay", 0) == 0:  # noqa: ASYNC110 - a counter
                await anyio.sleep(0.02)
        redis_server.start()
        with anyio.fail_after(30):
            result = await handle
    assert result.figures.polls == 1  # woken by the retried event, not a safety-net poll
    assert relay_a.woken == 1
    assert recv.stats().events["unverified"]["relay"] >= 1
    assert recv.stats().relayed == 1


def test_ttls_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="owner_ttl"):
        WebhookRelay(object(), "redis://127.0.0.1:1/0", owner_ttl=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="owner_ttl"):
        WebhookRelay(object(), "redis://127.0.0.1:1/0", owner_ttl=9, event_ttl=5)  # type: ignore[arg-type]
