"""Webhook events routed through Redis to the replica whose fleet owns the run.

OpenAI delivers an event to whichever replica its load balancer picks. A replica's
:class:`WebhookReceiver` first wakes its own fleet; an event for a response it does not own is
handed to :meth:`WebhookRelay.publish`, and the owning replica's relay wakes its fleet.

Keys (one ``{namespace}`` hash tag, so every key of a relay lives in one Redis Cluster slot
and the publish script may touch them all):

- ``owner:<response_id>`` → the replica id, set when a run starts waiting on that response (the
  fleet's ``on_waiting`` hook), deleted when it stops; it expires after ``event_ttl`` at the
  latest, so a replica that died leaks nothing for long.
- ``replica:<id>`` → alive, with a short TTL (``owner_ttl``) its relay refreshes: an owner
  record whose replica is gone is stale, seen as no owner and deleted by the publish.
- ``stream:<id>`` → the replica's inbox, a Redis **Stream**. Pub/sub was the other choice and
  was refused: a message published while the subscriber reconnects is gone, where a stream
  keeps it until read (the reader resumes from its last entry id).
- ``pending:<response_id>`` → the event, kept ``event_ttl``: every publish leaves it, and a
  replica that starts waiting on that response later (a run attached elsewhere, a batch
  resumed on another host) finds it. Publish (``SET pending; GET owner``) and ownership
  (``SET owner; GET pending``) each see the other's write in some order, so an event racing
  a run's registration reaches it either way.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .logs import get_logger

if TYPE_CHECKING:
    from .fleet import Fleet

__all__ = ["RelayError", "WebhookRelay"]

log = get_logger(__name__)

_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local owner = redis.call('GET', KEYS[2])
if not owner then return false end
local prefix = ARGV[3]
if redis.call('EXISTS', prefix .. 'replica:' .. owner) == 0 then
  redis.call('DEL', KEYS[2])
  return false
end
redis.call('XADD', prefix .. 'stream:' .. owner, 'MAXLEN', '~', ARGV[4], '*',
  'response_id', ARGV[5], 'type', ARGV[1])
return owner
"""
"""Leave the event for whoever waits on it later; if a live replica owns it, post it there.
(Keys built inside the script share the one hash tag of ``KEYS``.)"""

_DISOWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete an owner record only if it is still ours (another replica may attach the run)."""

_INBOX = 10_000
"""Entries a replica's stream keeps at most (approximately): events are read within ms."""


class RelayError(Exception):
    """Raised when the relay cannot reach Redis at start."""


class WebhookRelay:
    """Route webhook events between a service's replicas through Redis.

    Each replica enters one relay for its fleet (``webhooks=True``) and passes it to its
    :class:`~runfleet.webhooks.WebhookReceiver`::

        async with Fleet(client, rpm=3000, webhooks=True) as fleet, \\
                WebhookRelay(fleet, "redis://redis:6379/0") as relay:
            app.router.routes.append(WebhookReceiver(fleet, relay=relay).route())

    Args:
        fleet: the fleet whose runs this replica owns and wakes. Only a fleet with
            ``webhooks=True`` registers its runs; with it off, the relay only publishes (a
            replica that only receives) and warns once (``relay_fleet_without_webhooks``).
        redis: a ``redis://`` URL or a ``redis.asyncio.Redis`` client (not closed here).
        namespace: keeps several services apart on one Redis (the key's hash tag).
        owner_ttl: seconds a replica counts as alive after its last heartbeat (sent every
            third of it); its runs' events are kept pending, not posted, once it is gone.
        event_ttl: seconds an event waits in Redis for a replica to wait on its response.
        replica: this replica's id (default: a random one per relay).

    Raises:
        ValueError: a TTL out of range.
    """

    def __init__(
        self,
        fleet: Fleet,
        redis: str | aioredis.Redis,
        *,
        namespace: str = "runfleet",
        owner_ttl: float = 30.0,
        event_ttl: float = 86_400.0,
        replica: str | None = None,
    ) -> None:
        if not (0.1 <= owner_ttl < math.inf and owner_ttl <= event_ttl < math.inf):
            raise ValueError(
                f"need 0.1 <= owner_ttl <= event_ttl (finite), got {owner_ttl}, {event_ttl}"
            )
        self._fleet = fleet
        self._url = redis if isinstance(redis, str) else None
        self._redis = aioredis.Redis.from_url(redis) if isinstance(redis, str) else redis
        self.replica = replica or uuid.uuid4().hex[:16]
        self._prefix = f"runfleet:{{{namespace}}}:"
        self._owner_ttl = owner_ttl
        self._event_ttl = event_ttl
        self._publish = self._redis.register_script(_PUBLISH)
        self._disown = self._redis.register_script(_DISOWN)
        self._changes: dict[str, bool] = {}  # response id -> waiting, not yet written
        self._changed = anyio.Event()
        self._owned: set[str] = set()
        self._stack: contextlib.AsyncExitStack | None = None
        self.woken = 0
        """Events from other replicas (or left pending) that woke a run of this fleet."""

    def __repr__(self) -> str:
        return f"<WebhookRelay replica={self.replica} owned={len(self._owned)} woken={self.woken}>"

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    async def __aenter__(self) -> WebhookRelay:
        where = self._url or "the given client"
        try:
            await self._redis.ping()
            await self._beat()
        except (RedisError, OSError) as exc:
            raise RelayError(f"cannot reach Redis at {where}: {exc}") from None
        # Unwound in reverse: say goodbye (runs left are anyone's), stop the tasks, disconnect.
        stack = contextlib.AsyncExitStack()
        if self._url is not None:
            stack.push_async_callback(self._redis.aclose)
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        stack.push_async_callback(self._goodbye)
        self._stack = stack
        tg.start_soon(self._heartbeat)
        tg.start_soon(self._write_changes)
        tg.start_soon(self._read_inbox)
        # The ids waited on now come at once. A fleet without webhooks waits on no event, so
        # none of its runs is registered: it can still publish (a replica that only receives),
        # but events for its own runs will not find it. Said once, as a warning: not an error.
        if not self._fleet.on_waiting(self._on_waiting):
            log.warning(
                "relay_fleet_without_webhooks",
                replica=self.replica,
                note="this fleet has webhooks=False: its runs are not registered with the relay, "
                "events for them reach them only through their polls",
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._stack is not None
        await self._stack.aclose()

    async def _goodbye(self) -> None:
        """Stop following the fleet; give up its records so another replica may own them."""
        self._fleet.on_waiting(None)
        for response_id in self._owned:  # runs left running are anyone's who attaches them
            self._changes[response_id] = False
        try:
            with anyio.move_on_after(5.0, shield=True):
                await self._flush()
                await self._redis.delete(
                    self._key("replica", self.replica), self._key("stream", self.replica)
                )
        except (RedisError, OSError):
            log.warning("relay_goodbye_failed", replica=self.replica)

    # -- publishing (the receiving replica) ----------------------------------------------------

    async def publish(self, response_id: str, event_type: str) -> str | None:
        """Leave an event for ``response_id`` in Redis; return the live owner it was posted to.

        None: no live replica owns it now; it waits ``event_ttl`` for one that will.

        Raises:
            redis.exceptions.RedisError: Redis cannot be reached (answer 5xx: OpenAI retries).
        """
        owner = await self._publish(
            keys=[self._key("pending", response_id), self._key("owner", response_id)],
            args=[event_type, int(self._event_ttl * 1000), self._prefix, _INBOX, response_id],
        )
        return owner.decode() if isinstance(owner, bytes) else owner

    # -- owning (the replica whose fleet runs it) ----------------------------------------------

    def _on_waiting(self, response_id: str, waiting: bool) -> None:
        """The fleet's hook: record the change; the writer sends it (never blocks the engine)."""
        self._changes[response_id] = waiting
        self._changed.set()

    async def _write_changes(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                # The changes stay queued; the runs' safety-net polls cover the gap.
                log.warning("relay_owners_not_written", error=str(exc), queued=len(self._changes))
                await anyio.sleep(min(1.0, self._owner_ttl / 3))
                self._changed.set()

    async def _flush(self) -> None:
        """Write queued ownership changes in one pipeline; wake runs with a pending event."""
        changes = self._changes
        if not changes:
            return
        self._changes = {}
        ids = list(changes)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                ttl = int(self._event_ttl * 1000)
                for response_id, waiting in changes.items():
                    owner = self._key("owner", response_id)
                    if waiting:
                        pipe.set(owner, self.replica, px=ttl)
                        pipe.get(self._key("pending", response_id))
                    else:
                        await self._disown(keys=[owner], args=[self.replica], client=pipe)
                        pipe.echo(b"")  # two answers per change, whichever it is
                answers = await pipe.execute()
        except BaseException:
            for response_id in ids:  # nothing is lost: the next flush sends them again
                self._changes.setdefault(response_id, changes[response_id])
            raise
        for i, response_id in enumerate(ids):
            if changes[response_id]:
                self._owned.add(response_id)
                if answers[2 * i + 1]:  # an event came before this run waited on it
                    await self._deliver(response_id, "pending")
            else:
                self._owned.discard(response_id)

    async def _deliver(self, response_id: str, source: str) -> None:
        if self._fleet.wake(response_id):
            self.woken += 1
            log.debug("relay_woke", response_id=response_id, source=source)
            await self._redis.delete(self._key("pending", response_id))

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self._owner_ttl / 3)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                log.warning("relay_heartbeat_failed", error=str(exc))

    async def _beat(self) -> None:
        """Say this replica is alive; if Redis had forgotten it (restarted empty, or the beat
        came too late), write its owner records again, as they may be gone too."""
        ttl = int(self._owner_ttl * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key("replica", self.replica), b"1", px=ttl, get=True)
            pipe.pexpire(self._key("stream", self.replica), ttl)
            was, _ = await pipe.execute()
        if was is None and self._owned:
            log.info("relay_owners_rewritten", replica=self.replica, owned=len(self._owned))
            for response_id in self._owned:
                self._changes.setdefault(response_id, True)
            self._changed.set()

    async def _read_inbox(self) -> None:
        stream, last = self._key("stream", self.replica), "0"
        while True:
            try:
                answer: Any = await self._redis.xread({stream: last}, count=500, block=1000)
            except (RedisError, OSError) as exc:
                log.warning("relay_inbox_unreadable", error=str(exc))
                await anyio.sleep(min(1.0, self._owner_ttl / 3))
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id
                    response_id = fields.get(b"response_id", b"").decode()
                    if response_id:
                        await self._deliver(response_id, "relayed")
