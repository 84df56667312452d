"""The simulator's webhook sender: signed ``response.*`` events, one loop, one HTTP client.

A response's end is known when it is created (its timeline is data), so its delivery is one
heap entry pushed then: no task or timer per run at rest. One loop sleeps until the earliest
entry and sends what is due over one shared HTTP client, a bounded number at once; only a
delivery in flight is a task. The job's status is read again at send time, so a cancel turns
the planned ``response.completed`` into ``response.cancelled``, and an event already announced
is not announced twice (except by the scenario's deliberate duplicates).

Signatures follow Standard Webhooks as OpenAI sends them: ``webhook-id``,
``webhook-timestamp`` (Unix seconds of the attempt, on the wall clock the receiver checks) and
``webhook-signature`` = ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, twice during a
secret rotation.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx2
from anyio.abc import TaskGroup
from starlette.types import Receive, Send

from .lifecycle import Job, JobStatus
from .scenario import Scenario

__all__ = ["WebhookSender", "sign"]

_EVENTS = {
    JobStatus.COMPLETED: "response.completed",
    JobStatus.FAILED: "response.failed",
    JobStatus.CANCELLED: "response.cancelled",
    JobStatus.INCOMPLETE: "response.incomplete",
}
_IN_FLIGHT = 64
"""Deliveries sent at once; the rest wait in the heap (and count as late, like OpenAI's)."""


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """Return one ``v1,<base64>`` signature of a delivery, as Standard Webhooks defines it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(slots=True)
class _Delivery:
    """One event on its way; duplicates and retries reuse its id and body."""

    job: Job
    webhook_id: str = ""
    body: bytes = b""
    attempt: int = 0
    fated: bool = False  # drop/duplicate/reorder already decided for this event


class WebhookSender:
    """Send each background response's end to the scenario's webhook URL.

    Args:
        scenario: returns the current scenario (it changes on reset).
        now: returns scenario seconds (the simulator's clock).
        epoch: returns the Unix time of scenario time zero, for ``created_at``.
    """

    def __init__(
        self,
        scenario: Callable[[], Scenario],
        now: Callable[[], float],
        epoch: Callable[[], float],
    ) -> None:
        self._scenario = scenario
        self._now = now
        self._epoch = epoch
        self.stats: Counter[str] = Counter()
        self._heap: list[tuple[float, int, _Delivery]] = []
        self._seq = itertools.count()
        self._announced: dict[str, float] = {}
        self._wake = anyio.Event()
        self._changed = anyio.Event()
        self._rng = random.Random(scenario().seed + 2)

    def _count(self, key: str) -> None:
        self.stats[key] += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def reached(self, key: str, count: int) -> None:
        """Wait until counter ``key`` reaches ``count``: tests synchronise on this, not on time."""
        while self.stats[key] < count:
            await self._changed.wait()

    @property
    def enabled(self) -> bool:
        """Whether the scenario asks for webhooks."""
        return self._scenario().webhooks.url is not None

    def clear(self) -> None:
        """Forget every pending delivery and counter (the simulator was reset)."""
        self._heap.clear()
        self._announced.clear()
        self.stats.clear()
        self._rng = random.Random(self._scenario().seed + 2)
        self._wake.set()

    def schedule(self, job: Job, at: float) -> None:
        """Announce ``job``'s end, expected at scenario time ``at``, after the usual delay."""
        wh = self._scenario().webhooks
        if wh.url is None:
            return
        self._count("scheduled")
        self._push(at + wh.delay.draw(self._rng), _Delivery(job))

    def _push(self, due: float, delivery: _Delivery) -> None:
        first = not self._heap or due < self._heap[0][0]
        heapq.heappush(self._heap, (due, next(self._seq), delivery))
        if first:
            self._wake.set()

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Answer an ASGI server's lifespan, sending webhooks from startup to shutdown."""
        await receive()  # lifespan.startup
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    async def run(self) -> None:
        """Deliver due events until cancelled (the simulator's lifespan runs this once)."""
        slots = anyio.Semaphore(_IN_FLIGHT)
        async with httpx2.AsyncClient(timeout=10.0) as client, anyio.create_task_group() as tg:
            while True:
                self._wake = anyio.Event()  # before reading the heap, so no push is missed
                if not self._heap:
                    await self._wake.wait()
                    continue
                # The clock is read only once something is scheduled: reading it starts
                # scenario time, which must start at the first request.
                now = self._now()
                due = self._heap[0][0]
                if due > now:
                    scale = self._scenario().time_scale
                    with anyio.move_on_after((due - now) * scale):
                        await self._wake.wait()
                    continue
                _, _, delivery = heapq.heappop(self._heap)
                await slots.acquire()
                self._start(tg, client, delivery, slots, now)

    def _start(
        self,
        tg: TaskGroup,
        client: httpx2.AsyncClient,
        delivery: _Delivery,
        slots: anyio.Semaphore,
        now: float,
    ) -> None:
        if not delivery.body and not self._build(delivery, now):
            slots.release()
            return
        if not delivery.fated and not self._fate(delivery, now):
            slots.release()
            return
        tg.start_soon(self._send, client, delivery, slots)

    def _build(self, delivery: _Delivery, now: float) -> bool:
        """Make the event from the job's state now; False if there is nothing (new) to say."""
        job = delivery.job
        status, since = job.status_at(now)
        kind = _EVENTS.get(status)
        if kind is None or self._announced.get(job.id) == since:
            self._count("skipped")
            return False
        self._announced[job.id] = since
        event = {
            "id": "evt_" + secrets.token_hex(16),
            "object": "event",
            "created_at": int(self._epoch() + since),
            "type": kind,
            "data": {"id": job.id},
        }
        delivery.webhook_id = "wh_" + secrets.token_hex(16)
        delivery.body = json.dumps(event, separators=(",", ":")).encode()
        self._count("events")
        return True

    def _fate(self, delivery: _Delivery, now: float) -> bool:
        """Drop, duplicate or hold back an event as the scenario says; False if dropped."""
        wh = self._scenario().webhooks
        delivery.fated = True
        rng = self._rng
        if rng.random() < wh.drop:
            self._count("dropped")
            return False
        if rng.random() < wh.duplicate:
            self._count("duplicated")
            twin = _Delivery(delivery.job, delivery.webhook_id, delivery.body, fated=True)
            self._push(now + wh.delay.draw(rng), twin)
        if rng.random() < wh.reorder:
            self._count("reordered")
            self._push(now + wh.reorder_delay.draw(rng), delivery)
            return False
        return True

    def headers(self, delivery: _Delivery, now: float) -> dict[str, str]:
        """Return the signed headers of one attempt (two signatures while a secret rotates)."""
        wh = self._scenario().webhooks
        stamp = str(int(time.time()))  # the receiver checks it against its wall clock
        sigs = [sign(wh.secret, delivery.webhook_id, stamp, delivery.body)]
        rotating = wh.rotation_until is None or now < wh.rotation_until
        if wh.previous_secret is not None and rotating:
            sigs.append(sign(wh.previous_secret, delivery.webhook_id, stamp, delivery.body))
        return {
            "content-type": "application/json",
            "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": stamp,
            "webhook-signature": " ".join(sigs),
        }

    async def _send(
        self, client: httpx2.AsyncClient, delivery: _Delivery, slots: anyio.Semaphore
    ) -> None:
        try:
            wh = self._scenario().webhooks
            if wh.url is None:
                return
            self._count("sent")
            try:
                answer = await client.post(
                    wh.url, content=delivery.body, headers=self.headers(delivery, self._now())
                )
                code = str(answer.status_code)
            except httpx2.HTTPError as exc:
                code = type(exc).__name__
            self._count(f"answer_{code}")
            if code.startswith("2"):
                self._count("delivered")
                return
            self._count("failed")
            if delivery.attempt >= wh.retries:
                self._count("gave_up")
                return
            delivery.attempt += 1
            self._count("retried")
            backoff = wh.retry_delay.draw(self._rng) * math.pow(2, delivery.attempt - 1)
            self._push(self._now() + backoff, delivery)
        finally:
            slots.release()
