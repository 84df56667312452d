"""The forgery suite: over a thousand mutated deliveries, every one refused, nothing changed.

The receiver is bound to a real fleet tracking real (simulated, in-process) runs, so an
accepted forgery would move a run's poll to now: the suite checks the schedule, the fleet's
wake-ups and the receiver's counters after each batch. Requests go in-process through
``httpx2.ASGITransport`` for speed; ``tests/test_webhooks.py`` covers the real socket.

The SDK's verifier reads ``time.time()``; the suite pins the clock it sees, so "301 s old"
is exactly that and never 300 s because a second ticked over mid-test.
"""

from __future__ import annotations

import json
import random
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import openai.lib._webhooks as sdk_webhooks
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from starlette.applications import Starlette
from starlette.types import Message
from structlog.testing import capture_logs

from runfleet import Fleet
from runfleet.sim import SimApp
from runfleet.sim.webhooks import sign
from runfleet.webhooks import WebhookReceiver

from .helpers import API_KEY

SECRET = "whsec_Zm9yZ2VyeS1zdWl0ZS1zZWNyZXQtMDEyMzQ1Njc4OQ=="
WRONG = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0wMTI="
NOW = 1_800_000_000


@dataclass
class Delivery:
    """One request to the receiver, and the status it must get."""

    why: str
    body: bytes
    headers: dict[str, str]
    expect: int


def signed(
    response_id: str,
    *,
    webhook_id: str = "wh_valid0001",
    stamp: int = NOW,
    secret: str = SECRET,
    body: bytes | None = None,
) -> Delivery:
    """Return a correctly signed ``response.completed`` delivery (expect 200)."""
    if body is None:
        event = {
            "id": "evt_1",
            "object": "event",
            "created_at": stamp,
            "type": "response.completed",
            "data": {"id": response_id},
        }
        body = json.dumps(event).encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, webhook_id, str(stamp), body),
    }
    return Delivery("valid", body, headers, 200)


def _flip_char(text: str, rng: random.Random) -> str:
    """Flip one low bit of one character, keeping it a printable, non-space character."""
    while True:
        i = rng.randrange(len(text))
        c = chr(ord(text[i]) ^ (1 << rng.randrange(5)))
        if c.isprintable() and not c.isspace() and c != text[i]:
            return text[:i] + c + text[i + 1 :]


def forgeries(response_id: str, rng: random.Random) -> Iterator[Delivery]:
    """Yield mutated deliveries of one valid event, each with the status it must get."""
    base = signed(response_id)
    h = base.headers
    for _ in range(300):  # bit flips anywhere in the body (some make it invalid UTF-8)
        body = bytearray(base.body)
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        yield Delivery("body_flip", bytes(body), dict(h), 400)
    for _ in range(150):
        yield Delivery(
            "id_flip", base.body, h | {"webhook-id": _flip_char(h["webhook-id"], rng)}, 400
        )
    for _ in range(150):
        stamp = str(NOW + rng.choice([-1, 1]) * rng.randrange(1, 10_000))
        yield Delivery("timestamp_flip", base.body, h | {"webhook-timestamp": stamp}, 400)
    for _ in range(250):
        sig = "v1," + _flip_char(h["webhook-signature"][3:], rng)
        yield Delivery("signature_flip", base.body, h | {"webhook-signature": sig}, 400)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        yield Delivery(f"missing_{name}", base.body, {k: v for k, v in h.items() if k != name}, 400)
        yield Delivery(f"empty_{name}", base.body, h | {name: ""}, 400)
    partial = ["v1,", "v1", "v2," + h["webhook-signature"][3:], h["webhook-signature"][:20]]
    for sig in partial:
        yield Delivery("partial_signature", base.body, h | {"webhook-signature": sig}, 400)
    for stamp in ("abc", "1.5e9", " ", "-1", str(NOW) + "0"):
        yield Delivery("bad_timestamp", base.body, h | {"webhook-timestamp": stamp}, 400)
    for i in range(50):
        yield replace_id(signed(response_id, secret=WRONG), f"wh_wrong{i}", "wrong_secret")
    for i, offset in enumerate([-301, 301, -302, 302, -3600, 86_400] * 10):
        stale = signed(response_id, webhook_id=f"wh_time{i}", stamp=NOW + offset)
        yield Delivery(f"timestamp_{offset:+d}", stale.body, stale.headers, 400)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "", "multipart/form-data"):
        yield Delivery("content_type", base.body, h | {"content-type": ctype}, 415)
    for i in range(20):  # correctly signed, but not UTF-8
        bad = signed(
            response_id, webhook_id=f"wh_utf{i}", body=b'{"x":"\xff\xfe' + bytes([i]) + b'"}'
        )
        yield Delivery("invalid_utf8", bad.body, bad.headers, 400)
    for i in range(10):  # correctly signed, valid UTF-8, not JSON
        bad = signed(response_id, webhook_id=f"wh_json{i}", body=b"not json " + bytes([65 + i]))
        yield Delivery("not_json", bad.body, bad.headers, 400)
    for size in (1 << 20 | 1, 10 << 20):
        yield Delivery("too_large", b"{" + b" " * (size - 2) + b"}", dict(h), 413)


def replace_id(d: Delivery, webhook_id: str, why: str) -> Delivery:
    return Delivery(why, d.body, d.headers | {"webhook-id": webhook_id}, 400)


@asynccontextmanager
async def target() -> AsyncIterator[tuple[Fleet, WebhookReceiver, httpx2.AsyncClient, list[str]]]:
    """A fleet tracking three long runs on an in-process simulator, and its receiver."""
    app = SimApp({"seed": 5, "lifecycle": {"queued": 0, "in_progress": 3600}})
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    async with client, Fleet(client, rpm=6000, webhooks=True, seed=1) as fleet:
        ids = [(await fleet.submit_response(model="m", input=str(i))).id for i in range(3)]
        receiver = WebhookReceiver(fleet, secret=SECRET)
        transport = httpx2.ASGITransport(app=receiver)
        async with httpx2.AsyncClient(transport=transport, base_url="http://hook") as hook:
            yield fleet, receiver, hook, ids
        await fleet._engine.cancel_all("test over")


def state(fleet: Fleet) -> dict[int, float]:
    """Every tracked run's next poll: an accepted event would move one to now."""
    return {key: entry[0] for key, entry in fleet._engine._pacer.schedule._entries.items()}


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_webhooks, "time", types.SimpleNamespace(time=lambda: NOW + 0.5))


def spy_on_wake(fleet: Fleet) -> list[str]:
    """Record the response ids the receiver wakes, and still wake them."""
    woken: list[str] = []
    wake = fleet.wake

    def spy(response_id: str) -> bool:
        woken.append(response_id)
        return wake(response_id)

    fleet.wake = spy  # type: ignore[method-assign]
    return woken


async def post(hook: httpx2.AsyncClient, d: Delivery) -> httpx2.Response:
    return await hook.post("/", content=d.body, headers=d.headers)


async def test_a_thousand_forgeries_are_all_refused_and_change_nothing() -> None:
    rng = random.Random(2026)
    with capture_logs() as logs:
        async with target() as (fleet, receiver, hook, ids):
            woken = spy_on_wake(fleet)
            before = state(fleet)
            wrong: list[tuple[str, int, int]] = []
            count = 0
            for d in forgeries(ids[0], rng):
                count += 1
                answer = await post(hook, d)
                if answer.status_code != d.expect:
                    wrong.append((d.why, d.expect, answer.status_code))
            assert state(fleet) == before
            stats = receiver.stats()
            # The untouched delivery still works: the suite refused forgeries, not everything.
            assert (await post(hook, signed(ids[0]))).status_code == 200
            assert woken == [ids[0]]
    assert count >= 1000
    assert wrong == []
    assert stats.accepted == stats.woke == stats.duplicates == 0
    assert sum(stats.rejected.values()) == count
    text = repr(logs)
    assert SECRET not in text
    assert SECRET.removeprefix("whsec_") not in text


async def test_timestamps_inside_the_tolerance_are_accepted() -> None:
    async with target() as (_fleet, receiver, hook, ids):
        for i, offset in enumerate([-299, 299, -300, 300, 0]):
            answer = await post(
                hook, signed(ids[i % 3], webhook_id=f"wh_ok{i}", stamp=NOW + offset)
            )
            assert answer.status_code == 200, offset
    assert receiver.stats().accepted == 5


async def test_a_replay_changes_state_once() -> None:
    async with target() as (fleet, receiver, hook, ids):
        woken = spy_on_wake(fleet)
        valid = signed(ids[1])
        answers = [(await post(hook, valid)).json()["status"] for _ in range(50)]
    assert answers == ["ok"] + ["duplicate"] * 49
    assert woken == [ids[1]]
    stats = receiver.stats()
    assert (stats.accepted, stats.duplicates) == (1, 49)


async def test_an_event_for_an_unknown_response_is_acknowledged() -> None:
    async with target() as (fleet, receiver, hook, _):
        before = state(fleet)
        answer = await post(hook, signed("resp_not_ours"))
        assert state(fleet) == before
    assert answer.status_code == 200
    assert answer.json() == {"status": "unknown"}
    assert receiver.stats().unknown == 1


async def test_a_failing_wake_is_acknowledged_not_a_5xx() -> None:
    async with target() as (fleet, _receiver, hook, ids):

        def broken(response_id: str) -> bool:
            raise RuntimeError("boom")

        fleet.wake = broken  # type: ignore[method-assign]
        with capture_logs() as logs:
            answer = await post(hook, signed(ids[0]))
    assert answer.status_code == 200
    assert any(e["event"] == "webhook_wake_failed" for e in logs)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_an_oversized_body_is_refused_before_it_is_read(length: bool) -> None:
    """With a content-length: no chunk read. Chunked: reading stops just past 1 MiB."""
    chunks = 0
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks
        chunks += 1
        return {"type": "http.request", "body": b" " * 65536, "more_body": chunks < 160}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    if length:
        headers.append((b"content-length", str(160 * 65536).encode()))
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    async with target() as (_fleet, receiver, _, _):
        await receiver(scope, receive, send)
    assert sent[0]["status"] == 413
    assert chunks == (0 if length else 17)  # 17 x 64 KiB is the first read past 1 MiB


async def test_wrong_method_is_refused() -> None:
    async with target() as (_, _receiver, hook, _):
        answer = await hook.get("/")
    assert answer.status_code == 405


async def test_an_event_that_beats_its_create_still_wakes_the_run() -> None:
    """The event can arrive before the create's answer: the run is polled as soon as it waits.

    The simulator's runs end at once; a wrapper delivers the "event" (``fleet.wake``) before
    passing the create's answer on, rewritten to say ``queued``. Without the memory of early
    events, the run would wait for its 60 s safety-net poll and the test would time out.
    """
    sim = SimApp({"seed": 5, "lifecycle": {"queued": 0, "in_progress": 0}})
    fleets: list[Fleet] = []

    async def racing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/responses":
            await sim(scope, receive, send)
            return
        held: list[dict[str, Any]] = []

        async def hold(message: Message) -> None:
            held.append(dict(message))

        await sim(scope, receive, hold)
        body = json.loads(b"".join(m.get("body", b"") for m in held[1:]))
        assert fleets[0].wake(body["id"]) is False  # nothing waits on it yet
        data = json.dumps(body | {"status": "queued"}).encode()
        start = held[0] | {
            "headers": [(k, v) for k, v in held[0]["headers"] if k != b"content-length"]
        }
        await send(start)
        await send({"type": "http.response.body", "body": data})

    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=racing))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    async with client, Fleet(client, rpm=6000, webhooks=True, seed=1) as fleet:
        fleets.append(fleet)
        with anyio.fail_after(5):
            result = await fleet.respond(model="m", input="quick")
    assert result.status == "completed"
    assert result.figures.polls == 1


async def test_the_route_mounts_in_a_starlette_app() -> None:
    async with target() as (_fleet, receiver, _, ids):
        app = Starlette(routes=[receiver.route("/webhooks/openai")])
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://app") as http:
            d = signed(ids[2])
            ok = await http.post("/webhooks/openai", content=d.body, headers=d.headers)
            elsewhere = await http.post("/other", content=d.body, headers=d.headers)
            wrong = await http.get("/webhooks/openai")
    assert ok.json() == {"status": "ok"}
    assert (elsewhere.status_code, wrong.status_code) == (404, 405)
    assert receiver.stats().woke == 1


async def test_slow_bodies_time_out_and_past_max_pending_the_oldest_makes_room() -> None:
    """Headers and 10 bytes, then nothing: each held body gets a 408 after ``body_timeout``;
    past ``max_pending`` held bodies, the one read longest gets its 408 at once; a valid
    delivery sent while they hold every slot is read and wakes its run."""
    answers: list[int] = []

    async def slow(receiver: WebhookReceiver) -> None:
        sent: list[Message] = []
        first = True

        async def receive_once() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b'{"type": "r', "more_body": True}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        headers = [(b"content-type", b"application/json")]
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        await receiver(scope, receive_once, send)
        answers.append(sent[0]["status"])

    async with target() as (fleet, _, _, ids):
        receiver = WebhookReceiver(fleet, secret=SECRET, body_timeout=0.3, max_pending=3)
        transport = httpx2.ASGITransport(app=receiver)
        async with httpx2.AsyncClient(transport=transport, base_url="http://hook") as hook:
            woken = spy_on_wake(fleet)
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(slow, receiver)
                    await anyio.sleep(0.05)
                    tg.start_soon(slow, receiver)  # the fourth: the first makes room for it
                    await anyio.sleep(0.05)
                    assert answers == [408]
                    # The slots are full again: a valid delivery is read all the same.
                    assert (await post(hook, signed(ids[0]))).status_code == 200
            assert answers == [408] * 4
    assert woken == [ids[0]]
    assert receiver.stats().rejected == {"slow_body": 2, "evicted": 2}


@pytest.mark.parametrize("configured", ["list", "env"])
async def test_during_a_rotation_either_secret_verifies(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI keeps the old secret valid up to 24 h: a receiver given both accepts events
    signed with either, and one signed with neither is still refused."""
    async with target() as (fleet, _, _, ids):
        if configured == "env":
            monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", f"{WRONG}, {SECRET}")
            receiver = WebhookReceiver(fleet)
        else:
            receiver = WebhookReceiver(fleet, secret=[WRONG, SECRET])
        transport = httpx2.ASGITransport(app=receiver)
        async with httpx2.AsyncClient(transport=transport, base_url="http://hook") as hook:
            old = await post(hook, signed(ids[0], webhook_id="wh_old", secret=WRONG))
            new = await post(hook, signed(ids[1], webhook_id="wh_new", secret=SECRET))
            other = "whsec_b3RoZXItc2VjcmV0LW5laXRoZXItb2YtdGhlbS0wMTI="
            neither = await post(hook, signed(ids[2], webhook_id="wh_none", secret=other))
    assert (old.status_code, new.status_code, neither.status_code) == (200, 200, 400)
    assert receiver.stats().woke == 2
