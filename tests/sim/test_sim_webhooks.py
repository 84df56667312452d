"""The simulator's signed webhooks, over real HTTP to a recording endpoint on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from openai import AsyncOpenAI
from starlette.types import Receive, Scope, Send

from runfleet.sim import ScenarioError, SimServer, load_scenario
from runfleet.sim.server import serve_asgi
from runfleet.sim.webhooks import sign

from ..helpers import StartSim, sdk

NEW = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NTY="
OLD = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LTAxMjM0NTY="
FAST = {"lifecycle": {"queued": 0.1, "in_progress": 1.0}}


@dataclass
class Endpoint:
    """A webhook endpoint that records every delivery and answers as told."""

    answers: list[int] = field(default_factory=list)  # statuses to answer first, then 200
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.deliveries.append((headers, body))
        self.changed.set()
        status = self.answers.pop(0) if self.answers else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def until(self, count: int) -> None:
        """Wait (bounded) until ``count`` deliveries arrived."""
        with anyio.fail_after(10):
            while len(self.deliveries) < count:
                self.changed = anyio.Event()
                await self.changed.wait()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.deliveries]


async def until_stat(sim: SimServer, key: str, count: int) -> None:
    """Wait (bounded) until the simulator's webhook counter ``key`` reaches ``count``."""
    with anyio.fail_after(10):
        await sim.app.webhooks.reached(key, count)


@asynccontextmanager
async def sim_to(
    start_sim: StartSim, endpoint: Endpoint, time_scale: float = 0.01, **webhooks: Any
) -> AsyncIterator[tuple[SimServer, AsyncOpenAI]]:
    async with serve_asgi(endpoint) as port:
        hooks = {"url": f"http://127.0.0.1:{port}/hook", "secret": NEW, **webhooks}
        scenario = {**FAST, "webhooks": hooks}
        async with start_sim(scenario, time_scale=time_scale) as sim, sdk(sim) as client:
            yield sim, client


async def test_signed_events_name_the_response_and_its_end(start_sim: StartSim) -> None:
    hook = Endpoint()
    # Runs last 0.3 s here, not 10 ms: the cancel must reach the second run before it ends,
    # however busy the machine is.
    async with sim_to(start_sim, hook, time_scale=0.3) as (sim, client):
        done = await client.responses.create(model="m", input="a", background=True)
        cancelled = await client.responses.create(model="m", input="b", background=True)
        await client.responses.cancel(cancelled.id)
        await client.responses.create(model="m", input="c")  # foreground: no event
        await until_stat(sim, "delivered", 2)
        await client.responses.retrieve(done.id)
        stats = sim.stats()["webhooks"]
    by_id = {e["data"]["id"]: e for e in hook.events()}
    assert by_id[done.id]["type"] == "response.completed"
    assert by_id[cancelled.id]["type"] == "response.cancelled"
    assert len(hook.deliveries) == 2
    for headers, body in hook.deliveries:
        client.webhooks.verify_signature(body, headers, secret=NEW)  # raises if unsigned
        assert headers["content-type"] == "application/json"
        assert headers["webhook-id"].startswith("wh_")
    assert stats["events"] == stats["delivered"] == 2


async def test_failed_responses_send_response_failed(start_sim: StartSim) -> None:
    hook = Endpoint()
    async with serve_asgi(hook) as port:
        scenario: dict[str, Any] = {**FAST, "outcomes": {"failed": 1.0}}
        scenario["webhooks"] = {"url": f"http://127.0.0.1:{port}/", "secret": NEW}
        async with start_sim(scenario) as sim, sdk(sim) as client:
            await client.responses.create(model="m", input="a", background=True)
            await hook.until(1)
    assert hook.events()[0]["type"] == "response.failed"


async def test_duplicates_repeat_the_same_webhook_id(start_sim: StartSim) -> None:
    hook = Endpoint()
    async with sim_to(start_sim, hook, duplicate=1.0) as (sim, client):
        for i in range(3):
            await client.responses.create(model="m", input=str(i), background=True)
        await hook.until(6)
        stats = sim.stats()["webhooks"]
    ids = [headers["webhook-id"] for headers, _ in hook.deliveries]
    assert len(ids) == 6
    assert len(set(ids)) == 3
    assert stats["duplicated"] == 3


async def test_dropped_events_are_never_sent(start_sim: StartSim) -> None:
    hook = Endpoint()
    async with sim_to(start_sim, hook, drop=1.0) as (sim, client):
        r = await client.responses.create(model="m", input="x", background=True)
        await until_stat(sim, "dropped", 1)
        assert (await client.responses.retrieve(r.id)).status == "completed"
    assert hook.deliveries == []


async def test_reordered_events_arrive_after_later_ones(start_sim: StartSim) -> None:
    hook = Endpoint()
    async with sim_to(start_sim, hook, reorder=0.5, reorder_delay=3.0) as (sim, client):
        created = [
            (await client.responses.create(model="m", input=str(i), background=True)).id
            for i in range(12)
        ]
        await hook.until(12)
        stats = sim.stats()["webhooks"]
    arrived = [e["data"]["id"] for e in hook.events()]
    assert sorted(arrived) == sorted(created)
    assert arrived != created  # fixed run times: without reordering they would come in order
    assert 0 < stats["reordered"] < 12


async def test_rotation_signs_with_both_secrets_until_the_window_ends(
    start_sim: StartSim,
) -> None:
    hook = Endpoint()
    # The early run is signed at 1.1 scenario seconds, the window ends at 20 (1 s real): a
    # margin that a busy machine does not eat.
    rotation = {"previous_secret": OLD, "rotation_until": 20.0}
    async with sim_to(start_sim, hook, time_scale=0.05, **rotation) as (sim, client):
        await client.responses.create(model="m", input="early", background=True)
        await hook.until(1)
        # Until scenario time 20.0 exactly: the simulator reads the same loop clock.
        await anyio.sleep((20.0 - sim.app.now()) * sim.app.scenario.time_scale + 0.001)
        await client.responses.create(model="m", input="late", background=True)
        await hook.until(2)
    (early_h, early_b), (late_h, late_b) = hook.deliveries
    assert len(early_h["webhook-signature"].split()) == 2
    client.webhooks.verify_signature(early_b, early_h, secret=OLD)
    client.webhooks.verify_signature(early_b, early_h, secret=NEW)
    assert len(late_h["webhook-signature"].split()) == 1
    client.webhooks.verify_signature(late_b, late_h, secret=NEW)
    with pytest.raises(Exception, match="signature"):
        client.webhooks.verify_signature(late_b, late_h, secret=OLD)


async def test_refused_deliveries_are_retried_with_the_same_id(start_sim: StartSim) -> None:
    hook = Endpoint(answers=[500, 503])
    async with sim_to(start_sim, hook, retry_delay=0.5) as (sim, client):
        await client.responses.create(model="m", input="x", background=True)
        await until_stat(sim, "delivered", 1)
        stats = sim.stats()["webhooks"]
    assert len({h["webhook-id"] for h, _ in hook.deliveries}) == 1
    assert stats["retried"] == 2
    assert stats["delivered"] == 1


async def test_no_url_means_no_sender_work(start_sim: StartSim) -> None:
    async with start_sim(FAST) as sim, sdk(sim) as client:
        await client.responses.create(model="m", input="x", background=True)
        assert sim.stats()["webhooks"] == {}


def test_signature_matches_the_sdk_verifier() -> None:
    body = b'{"id":"evt_1"}'
    sig = sign(NEW, "wh_1", "1700000000", body)
    assert sig.startswith("v1,")
    assert sign(NEW, "wh_1", "1700000000", body) != sign(OLD, "wh_1", "1700000000", body)


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        ({"secret": "not-a-secret"}, "starts with 'whsec_'"),
        ({"previous_secret": "whsec_%%%"}, "base64"),
        ({"drop": 1.5}, "webhooks.drop"),
        ({"dupes": 0.1}, "unknown key 'webhooks.dupes'"),
    ],
)
def test_webhook_settings_are_validated(webhooks: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario({"webhooks": webhooks})
