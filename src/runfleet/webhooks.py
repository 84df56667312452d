"""Receive OpenAI's ``response.*`` webhooks and wake the fleet's runs they name.

OpenAI sends an event when a background response ends; it carries only the response id, so
the receiver's whole job is to tell the fleet "poll this one now": one retrieve then fetches
the result. Everything else here is about not being fooled and not being retried forever:

- The raw body is verified with the SDK's ``client.webhooks.unwrap`` (Standard Webhooks:
  HMAC-SHA256 over ``id.timestamp.body``, any of several signatures during a rotation,
  timestamps within 300 s either way) before anything parses it.
- Bodies over ``max_body`` get a 413 from their ``content-length`` alone, or as soon as the
  chunks read exceed it: a 10 MiB body is never held in memory.
- Reading happens before any signature can be checked, so anyone can hold a body open: a
  body not read within ``body_timeout`` gets a 408, and past ``max_pending`` bodies being
  read at once the one read longest gets its 408 now, to make room. Without both, 300
  connections that sent headers and 10 bytes held the receiver for good and, at a 1,024-fd
  limit, no valid delivery got through. Turning the newcomer away instead (503) let a
  slow-loris flood that keeps ``max_pending`` bodies open refuse every valid delivery for as
  long as it lasts; a valid body comes with its headers and is read at once, so it is never
  the one read longest. A 408 says ``connection: close``: the server drops the socket at
  once, keeping its descriptors for deliveries.
- Several secrets may be given at once: during a rotation OpenAI keeps the old secret valid
  for up to 24 h, and a receiver that knows both verifies events signed with either.
- Delivery is at-least-once, so events are deduplicated by ``webhook-id``, remembered at
  least twice the signature tolerance (a replay older than that fails the timestamp check)
  and at most ``max_ids`` of them.
- A duplicate or an event for a response this fleet does not track is acknowledged (2xx):
  a 4xx or 5xx would only make OpenAI deliver it again for days. For the same reason a
  failure while waking the run is logged and acknowledged; the safety-net poll covers it.
- With a :class:`~runfleet.relay.WebhookRelay`, an event for a response this fleet does not
  track is published to Redis for the replica that owns it (or whoever waits on it later);
  if Redis cannot take it, the answer is 503 and the id is forgotten, so OpenAI's retry is
  applied, not taken for a duplicate.

Nothing logged carries a header value but the (truncated) ``webhook-id``; never a secret.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from openai import InvalidWebhookSignatureError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .logs import get_logger
from .metrics import RECEIVER_FAMILIES, Metrics, expose, receiver_metrics
from .stats import nested

if TYPE_CHECKING:
    from .fleet import Fleet
    from .relay import WebhookRelay

__all__ = ["RESPONSE_EVENTS", "ReceiverStats", "WebhookReceiver"]

log = get_logger(__name__)

RESPONSE_EVENTS = frozenset(
    {"response.completed", "response.failed", "response.cancelled", "response.incomplete"}
)
"""The events that end a background response; the only ones that wake a run."""

_TOLERANCE = 300.0
"""The SDK's ``unwrap`` accepts timestamps this many seconds old or ahead, no more."""


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """What a :class:`WebhookReceiver` has answered so far."""

    received: int
    """Requests that reached the receiver."""
    accepted: int
    """Verified, new events (each woke a run or was acknowledged as unknown)."""
    woke: int
    """Accepted events that woke a run of the fleet."""
    unknown: int
    """Accepted events for responses the fleet does not track, or of other types."""
    duplicates: int
    """Verified events whose ``webhook-id`` was seen before: acknowledged, not applied."""
    rejected: dict[str, int]
    """Refused requests by reason (``signature``, ``too_large``, ``content_type``...)."""
    relayed: int = 0
    """Accepted events this fleet does not track, published through the relay to their owner
    (or left for whoever waits on them later)."""
    events: dict[str, dict[str, int]] = field(default_factory=dict)
    """Requests by event type, then result: ``unverified`` and the refusal's reason, or the
    verified event's type and ``woke``, ``relayed``, ``unknown`` or ``duplicate``."""


class _Reject(Exception):
    """Raised to answer a request with a 4xx and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebhookReceiver:
    """An ASGI app that verifies OpenAI webhooks and wakes the runs they name.

    Mount it in any ASGI server or framework; use :meth:`route` inside Starlette or FastAPI.
    Give the fleet ``webhooks=True`` so its Responses runs wait for events, with a slow
    safety-net poll, instead of polling on the normal schedule.

    Example::

        async with Fleet(AsyncOpenAI(), rpm=3000, webhooks=True) as fleet:
            app.router.routes.append(WebhookReceiver(fleet).route("/webhooks/openai"))
            ...

    Args:
        fleet: the fleet whose runs events wake.
        secret: the endpoint's ``whsec_...`` signing secret, or several (old and new during
            a rotation); default ``OPENAI_WEBHOOK_SECRET`` (several: separated by commas).
        max_body: larger bodies are refused with 413 (OpenAI's events are a few hundred bytes).
        max_ids: most ``webhook-id`` values remembered for deduplication.
        body_timeout: seconds to read a body before answering 408.
        max_pending: bodies read at once; past it, the one read longest is answered 408.
        relay: routes events for runs this fleet does not own to the replica that does.
        metrics: expose the receiver's counts to Prometheus (True: the default registry).

    Raises:
        ValueError: no secret given nor in the environment, or a limit out of range.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        secret: str | Sequence[str] | None = None,
        max_body: int = 1 << 20,
        max_ids: int = 100_000,
        body_timeout: float = 10.0,
        max_pending: int = 256,
        relay: WebhookRelay | None = None,
        metrics: Metrics = False,
    ) -> None:
        if secret is None:
            secret = os.environ.get("OPENAI_WEBHOOK_SECRET", "").split(",")
        secrets = [s.strip() for s in ([secret] if isinstance(secret, str) else secret)]
        if not all(secrets) or not secrets:
            raise ValueError(
                "no webhook secret: pass secret= or set OPENAI_WEBHOOK_SECRET "
                "(the whsec_... value shown when the endpoint was registered)"
            )
        if max_body < 1 or max_ids < 1 or max_pending < 1:
            raise ValueError(
                "max_body, max_ids and max_pending must be >= 1, "
                f"got {max_body}, {max_ids}, {max_pending}"
            )
        if not 0 < body_timeout < math.inf:
            raise ValueError(f"body_timeout must be a positive number, got {body_timeout!r}")
        self._fleet = fleet
        self._secrets = tuple(secrets)
        self._max_body = max_body
        self._max_ids = max_ids
        self._body_timeout = body_timeout
        self._max_pending = max_pending
        self._pending: OrderedDict[int, anyio.CancelScope] = OrderedDict()  # oldest first
        self._reads = itertools.count()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._events: Counter[tuple[str, str]] = Counter()
        self._relay = relay
        expose(receiver_metrics(self.stats), metrics, RECEIVER_FAMILIES)

    def __repr__(self) -> str:
        c = self._counts
        return (
            f"<WebhookReceiver accepted={c['accepted']} duplicates={c['duplicates']} "
            f"rejected={sum(self._rejected.values())} remembered={len(self._seen)}>"
        )

    def route(self, path: str = "/webhooks/openai") -> Route:
        """Return a Starlette ``Route`` for ``POST path`` (FastAPI: ``app.router.routes``)."""
        return Route(path, self, methods=["POST"], name="openai_webhooks")

    def stats(self) -> ReceiverStats:
        """Return a snapshot of what has been answered."""
        c = self._counts
        return ReceiverStats(
            received=c["received"],
            accepted=c["accepted"],
            woke=c["woke"],
            unknown=c["unknown"],
            duplicates=c["duplicates"],
            rejected=dict(self._rejected),
            relayed=c["relayed"],
            events=nested(self._events),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self._counts["received"] += 1
        try:
            status, answer = await self._handle(scope, receive)
        except _Reject as rej:
            self._rejected[rej.reason] += 1
            self._events["unverified", rej.reason] += 1
            log.info("webhook_rejected", reason=rej.reason, status=rej.status)
            status, answer = rej.status, {"error": rej.reason}
        # A stalled body's connection is closed after its 408, not kept for the rest of it. (A
        # 413's is not: its client is still sending, and a close would reset the connection
        # before it reads the answer; the server drops the rest as it comes.)
        await _respond(send, status, answer, close=status == 408)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope.get("method") != "POST":
            raise _Reject(405, "method")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _Reject(415, "content_type")
        body = await self._read_within(headers, receive)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject(400, "encoding") from None
        event = self._verify(body, headers)
        answer = self._apply(headers["webhook-id"], event)
        if answer["status"] == "unknown" and self._relay is not None:
            return await self._publish(headers["webhook-id"], event)
        result = "woke" if answer["status"] == "ok" else answer["status"]
        self._events[str(getattr(event, "type", None)), result] += 1
        return 200, answer

    async def _publish(self, webhook_id: str, event: Any) -> tuple[int, dict[str, Any]]:
        """Hand an event this fleet does not own to the relay; 503 if Redis cannot take it."""
        assert self._relay is not None
        kind, response_id = str(getattr(event, "type", None)), _response_id(event)
        if kind not in RESPONSE_EVENTS or not response_id:
            self._events[kind, "unknown"] += 1
            return 200, {"status": "unknown"}
        try:
            owner = await self._relay.publish(response_id, kind)
        except Exception:
            self._seen.pop(webhook_id, None)  # OpenAI's retry must not look like a duplicate
            self._counts["accepted"] -= 1
            self._counts["unknown"] -= 1
            log.exception("webhook_relay_failed", response_id=response_id)
            raise _Reject(503, "relay") from None
        self._counts["unknown"] -= 1
        self._counts["relayed"] += 1
        self._events[kind, "relayed"] += 1
        log.debug("webhook_relayed", response_id=response_id, owner=owner)
        return 200, {"status": "relayed"}

    def _verify(self, body: bytes, headers: dict[str, str]) -> Any:
        """Return the event if any secret's signature holds; nothing parses it before."""
        unwrap = self._fleet.client.webhooks.unwrap
        for secret in self._secrets:
            try:
                return unwrap(body, headers, secret=secret)
            except InvalidWebhookSignatureError:
                continue
            except json.JSONDecodeError:
                raise _Reject(400, "json") from None
            except Exception:  # a missing header, a non-ASCII signature: forged, never a 500
                raise _Reject(400, "headers") from None
        raise _Reject(400, "signature")

    async def _read_within(self, headers: dict[str, str], receive: Receive) -> bytes:
        """Read the body within ``body_timeout``, as one of at most ``max_pending``."""
        if len(self._pending) >= self._max_pending:
            _, oldest = self._pending.popitem(last=False)
            oldest.cancel()  # its reader answers 408 "evicted": a slow body makes room
        key = next(self._reads)
        reading = anyio.CancelScope(deadline=anyio.current_time() + self._body_timeout)
        self._pending[key] = reading
        try:
            with reading:
                return await self._read(headers, receive)
        finally:
            evicted = self._pending.pop(key, None) is None
        if evicted:
            raise _Reject(408, "evicted")
        raise _Reject(408, "slow_body")

    async def _read(self, headers: dict[str, str], receive: Receive) -> bytes:
        """Read the body, refusing it as soon as it is known to exceed ``max_body``."""
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _Reject(400, "content_length")
            if int(length) > self._max_body:
                raise _Reject(413, "too_large")  # from the header alone: nothing is read
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reject(400, "disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _Reject(413, "too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _apply(self, webhook_id: str, event: Any) -> dict[str, Any]:
        """Deduplicate a verified event and wake its run; never raises."""
        shown = webhook_id[:64]
        if not self._remember(webhook_id):
            self._counts["duplicates"] += 1
            log.debug("webhook_duplicate", webhook_id=shown)
            return {"status": "duplicate"}
        self._counts["accepted"] += 1
        kind = getattr(event, "type", None)
        response_id = _response_id(event)
        woke = False
        if kind in RESPONSE_EVENTS and response_id:
            try:
                woke = self._fleet.wake(response_id)
            except Exception:
                # Acknowledge anyway: a 5xx would be retried for days, and the run's
                # safety-net poll finds what this event would have told.
                log.exception("webhook_wake_failed", webhook_id=shown, response_id=response_id)
        self._counts["woke" if woke else "unknown"] += 1
        log.debug(
            "webhook_received" if woke else "webhook_unknown",
            webhook_id=shown,
            type=kind,
            response_id=response_id,
        )
        return {"status": "ok" if woke else "unknown"}

    def _remember(self, webhook_id: str) -> bool:
        """Record an id; False if it was seen within the window (a duplicate)."""
        now = anyio.current_time()
        seen = self._seen
        horizon = now - 2 * _TOLERANCE
        while seen and (next(iter(seen.values())) < horizon or len(seen) >= self._max_ids):
            seen.popitem(last=False)
        if webhook_id in seen:
            return False
        seen[webhook_id] = now
        return True


def _response_id(event: Any) -> str | None:
    data = getattr(event, "data", None)
    ident = data.get("id") if isinstance(data, dict) else getattr(data, "id", None)
    return ident if isinstance(ident, str) else None


async def _respond(send: Send, status: int, answer: dict[str, Any], *, close: bool) -> None:
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer a server's lifespan messages when the receiver is served on its own."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
