"""One account's limits shared by every process that uses it, through Redis.

Each :class:`~runfleet.fleet.Fleet` keeps its own queue and priorities; what the processes
share is the *reservation*: each admission the local queue grants goes through one Lua script
(:mod:`runfleet.admission.redis_script`) that spends the account's requests and tokens on
Redis' clock. :class:`RedisLimits` is that store. It is an
:class:`~runfleet.admission.bucket.AdmissionBucket` (the request quota's seam), the token
quota's shared half, and the carrier of what one process learns for all: a 429's pause, the
limits the headers say, tokens given back after reconciliation. Those ride the next call (one
round trip), and a 429 is sent at once (:meth:`RedisLimits.flush`) so the others pause too.

Why redis-py's asyncio client and our own script rather than ``limits``' async Redis storage:
``limits`` offers fixed and moving windows keyed by one limit, hit or test one at a time, on
the client's clock; it has no way to reserve requests and tokens in one atomic step, no wait
("when would this fit?") to sleep on, and its moving window lets a minute's quota out at once,
which a server enforcing sub-minute windows refuses. What remains of it would be the client.

When Redis fails, the user's ``on_failure`` decides:

* ``"fail_closed"`` (the default): admissions wait, retrying every ``retry_every`` seconds, for
  at most ``max_outage`` seconds, then fail with :class:`~runfleet.errors.RedisUnavailable`
  (a :class:`~runfleet.errors.QuotaExhausted`: the fleet ends its runs with it). Nothing is
  ever sent that the account's other processes did not agree to.
* ``"local_fallback"``: each process goes on alone at limit / N, N being ``processes`` if
  given, else the number of processes the heartbeat registry last showed alive. When Redis is
  back, what the process admitted alone is added to the shared buckets, so a Redis restarted
  empty does not let a second burst through.

A Redis that was never reached (a wrong URL) fails the first admission whatever the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import RedisUnavailable
from ..logs import get_logger
from .bucket import LeakyBucket, Rate
from .redis_script import SCRIPT, keys_for
from .round_trips import RoundTrips, SharedStats

__all__ = ["OnRedisFailure", "RedisLimits"]

log = get_logger(__name__)

OnRedisFailure = Literal["fail_closed", "local_fallback"]
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# A round trip slower than this is an outage's business, not a delay to allow for: the
# allowance would otherwise slow the account to a crawl for one slow member.
_MAX_LAG = 1.0


class RedisLimits:
    """The requests and tokens of ``account``, shared with every process that names it.

    Example::

        limits = RedisLimits("redis://cache:6379/0", account="prod-key",
                             on_failure="local_fallback")
        async with Fleet(client, rpm=3000, redis=limits) as fleet:
            ...

    Args:
        redis: a ``redis://`` URL, or a ``redis.asyncio.Redis`` client of the caller's.
        account: the name the processes of one account share (keys are ``runfleet:{account}``).
        on_failure: ``"fail_closed"`` or ``"local_fallback"`` (see the module docstring).
        processes: N for the fallback's limit / N; None learns it from the heartbeats.
        max_outage: seconds fail_closed waits for Redis before admissions fail.
        retry_every: seconds between attempts to reach a Redis that is down.
        heartbeat: seconds between this process's heartbeats (it is forgotten after three
            missed ones, so a process that stopped sending stops counting).
        redis_time: for deterministic tests only: the time passed to the script instead of
            Redis ``TIME``.

    Raises:
        ValueError: a bad URL or setting.
    """

    def __init__(
        self,
        redis: str | aredis.Redis,
        *,
        account: str,
        on_failure: OnRedisFailure = "fail_closed",
        processes: int | None = None,
        max_outage: float = 30.0,
        retry_every: float = 1.0,
        heartbeat: float = 2.0,
        redis_time: Callable[[], float] | None = None,
    ) -> None:
        if on_failure not in ("fail_closed", "local_fallback"):
            raise ValueError(
                f"on_failure must be 'fail_closed' or 'local_fallback', not {on_failure!r}"
            )
        if processes is not None and (isinstance(processes, bool) or processes < 1):
            raise ValueError(f"processes must be at least 1, got {processes!r}")
        if not account or not isinstance(account, str):
            raise ValueError(f"account must be a non-empty name, got {account!r}")
        for name, value in (
            ("max_outage", max_outage),
            ("retry_every", retry_every),
            ("heartbeat", heartbeat),
        ):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(redis, str):
            parts = urlsplit(redis)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise ValueError(
                    f"redis must be a redis://, rediss:// or unix:// URL, got {_where(redis)!r}"
                )
            self.where = _where(redis)
            self._client = aredis.Redis.from_url(
                redis, socket_timeout=5.0, socket_connect_timeout=2.0, retry=None
            )
            self._owned = True
        else:
            self.where = "a redis.asyncio client"
            self._client, self._owned = redis, False
        self.account = account
        self.on_failure: OnRedisFailure = on_failure
        self.processes = processes
        self.max_outage = float(max_outage)
        self.retry_every = float(retry_every)
        self.heartbeat = float(heartbeat)
        self._redis_time = redis_time
        self._script = self._client.register_script(SCRIPT)
        self._keys = keys_for(account)
        self._member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._rpm: float | None = None  # configured here (bind)
        self._tpm: float | None = None
        # What this process must tell the others; sent with its next call.
        self._refund = 0.0
        self._pauses = {"requests": 0.0, "tokens": 0.0}
        self._learned: tuple[float | None, float | None] = (None, None)
        self._told: tuple[float | None, float | None] = (None, None)
        self._last_beat = -math.inf
        self._reached = False
        self._down_since: float | None = None
        self._last_try = -math.inf
        self._local = LeakyBucket()  # the fallback's buckets, at limit / N
        self._local_tokens = LeakyBucket()
        self._members = 1
        self._rpm_in_force: float | None = None
        self._lag = 0.0  # this process's round-trip allowance, sent with its heartbeat
        self._lag_in_force = 0.0  # the largest among the live processes, as last answered
        self._warned_rpm = False
        self._trips = RoundTrips()
        self._failures = 0
        self._fallback_admissions = 0

    def bind(self, rpm: float, tpm: float | None) -> None:
        """Set the limits this process configured (the quota calls it): the smallest wins."""
        self._rpm, self._tpm = rpm, tpm

    async def connect(self) -> None:
        """Check that Redis answers (the CLI does before starting anything).

        Raises:
            RedisUnavailable: it does not.
        """
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(self.where, self.account, _why(exc)) from None
        self._reached = True

    # -- the AdmissionBucket seam --------------------------------------------------------------

    async def reserve(self, now: float, rate: Rate) -> float:
        """Take one request from the account's bucket, or return the seconds until one fits."""
        return (await self._call(rate, 1.0, 0.0, self._token_limit))[0]

    async def fill(self, at: float, rate: Rate) -> None:
        """Count the bucket full at a pause's end: the script does so for the shared one."""
        self._local.fill_at(at, self._scaled(rate))

    # -- tokens and what is learned ------------------------------------------------------------

    async def reserve_tokens(self, tokens: float, limit: float) -> float:
        """Take ``tokens`` from the account's token bucket, or return the seconds until they fit."""
        self._token_limit = limit
        return (await self._call(None, 0.0, tokens, limit))[1]

    _token_limit: float | None = None  # the token limit in force here, once one is known

    def give_back(self, tokens: float) -> None:
        """Return ``tokens`` to the shared bucket (reconciliation, a refused request)."""
        self._refund += tokens

    def paused(self, limit: Literal["requests", "tokens"], seconds: float) -> None:
        """Share a 429's pause: the others wait ``seconds`` too (sent by :meth:`flush`)."""
        self._pauses[limit] = max(self._pauses[limit], seconds)

    def learned(self, rpm: float | None, tpm: float | None) -> None:
        """Share the limits the server's headers said, when they change."""
        self._learned = (rpm, tpm)

    async def flush(self) -> None:
        """Send what this process must tell the others now, reserving nothing."""
        with contextlib.suppress(RedisUnavailable):
            await self._call(None, 0.0, 0.0, self._token_limit)

    async def aclose(self) -> None:
        """Give back what is pending and close the connections this store opened."""
        if self._refund and self._reached and self._down_since is None:
            await self.flush()
        if self._owned:
            await self._client.aclose()

    # -- the call ------------------------------------------------------------------------------

    async def _call(
        self, rate: Rate | None, requests: float, tokens: float, token_limit: float | None
    ) -> tuple[float, float]:
        loop_now = asyncio.get_running_loop().time()
        if self._down_since is not None and loop_now - self._last_try < self.retry_every:
            return self._without_redis(loop_now, None, rate, requests, tokens, token_limit)
        beat = loop_now - self._last_beat >= self.heartbeat
        refund, pauses, learned = self._refund, dict(self._pauses), self._learned
        carry_r = carry_t = 0.0
        if self._down_since is not None:  # what was admitted alone joins the shared buckets
            carry_r = self._local.level(loop_now, self._scaled(rate)) if rate else 0.0
            if token_limit:
                carry_t = self._local_tokens.level(loop_now, self._token_rate(token_limit))
        rpm = rate.rpm if rate is not None else (self._rpm or 2.0)
        args = [
            "" if self._redis_time is None else repr(self._redis_time()),
            self._member if beat else "",
            repr(3 * self.heartbeat),
            repr(self._rpm or rpm),
            "" if self._tpm is None else repr(self._tpm),
            repr(requests),
            repr(rpm),
            repr(rate.capacity if rate is not None else 1.0),
            repr(rate.delay if rate is not None else 0.0),
            repr(tokens),
            "" if token_limit is None else repr(token_limit),
            repr(refund if token_limit is not None else 0.0),
            repr(pauses["requests"]),
            repr(pauses["tokens"]),
            "" if learned[0] is None or learned[0] == self._told[0] else repr(learned[0]),
            "" if learned[1] is None or learned[1] == self._told[1] else repr(learned[1]),
            repr(carry_r),
            repr(carry_t),
            repr(self._lag_allowance(beat)),
        ]
        started = time.perf_counter()
        try:
            out = await self._script(keys=self._keys, args=args)
        except _DOWN as exc:
            self._last_try = loop_now
            self._failures += 1
            return self._without_redis(loop_now, exc, rate, requests, tokens, token_limit)
        self._trips.add(time.perf_counter() - started)
        self._reached = True
        if token_limit is not None:
            self._refund -= refund
        for limit, seconds in pauses.items():
            if self._pauses[limit] == seconds:
                self._pauses[limit] = 0.0
        self._told = learned
        if beat:
            self._last_beat = loop_now
        # A call sent before the outage was seen says nothing of Redis now.
        if self._down_since is not None and loop_now >= self._down_since:
            log.warning(
                "shared_limits_back", account=self.account, down_for=loop_now - self._down_since
            )
            self._down_since = None
            self._local, self._local_tokens = LeakyBucket(), LeakyBucket()
        r_wait, t_wait, in_force, smallest, largest, alive = (float(x) for x in out[:6])
        self._rpm_in_force, self._members = in_force, max(1, int(alive))
        self._lag_in_force = float(out[7])
        if smallest != largest and not self._warned_rpm:
            self._warned_rpm = True
            log.warning(
                "shared_rpm_differs",
                account=self.account,
                smallest=smallest,
                largest=largest,
                note="processes on this account configure different rpm: the smallest is in force",
            )
        return r_wait, t_wait

    def _without_redis(
        self,
        now: float,
        exc: BaseException | None,
        rate: Rate | None,
        requests: float,
        tokens: float,
        token_limit: float | None,
    ) -> tuple[float, float]:
        """Answer by the policy while Redis does not."""
        why = _why(exc) if exc is not None else "still down"
        if not self._reached:
            raise RedisUnavailable(self.where, self.account, why)
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "shared_limits_down", account=self.account, policy=self.on_failure, error=why
            )
        if self.on_failure == "fail_closed":
            out_for = now - self._down_since
            if out_for >= self.max_outage:
                raise RedisUnavailable(
                    self.where, self.account, f"{why}; down for {out_for:.1f} s (fail_closed)"
                )
            wait = max(0.01, min(self.retry_every, self.max_outage - out_for))
            return wait, wait
        r_wait = t_wait = 0.0
        if requests and rate is not None:
            r_wait = self._local.admit(now, self._scaled(rate))
            self._fallback_admissions += r_wait == 0.0
        if tokens and token_limit:
            t_wait = self._local_tokens.admit(now, self._token_rate(token_limit), tokens)
        # Retry Redis when the next try is due, not later: the wait is cut there.
        until_try = max(0.01, self._last_try + self.retry_every - now)
        return min(r_wait, until_try) if r_wait else 0.0, min(t_wait, until_try) if t_wait else 0.0

    def _lag_allowance(self, beat: bool) -> float:
        """This process's round-trip allowance, recomputed with each heartbeat.

        The 99th percentile of its recent script calls as its loop saw them (a loaded loop's
        stalls included), at most ``_MAX_LAG``; none on a clock faked by a test.
        """
        if beat and self._redis_time is None:
            self._lag = min(_MAX_LAG, self._trips.p99())
        return self._lag

    def _share(self) -> int:
        return self.processes if self.processes is not None else self._members

    def _scaled(self, rate: Rate | None) -> Rate:
        """The fallback's rate: this process's share, limit / N."""
        if rate is None:
            return Rate(rpm=2.0, capacity=1.0)
        n = self._share()
        rpm = max(2.0, rate.rpm / n)
        return Rate(rpm=rpm, capacity=max(1.0, min(rate.capacity / n, rpm / 2)), delay=rate.delay)

    def _token_rate(self, limit: float) -> Rate:
        share = limit / self._share()
        return Rate(rpm=share, capacity=share / 60.0)

    def stats(self) -> SharedStats:
        """Return a snapshot of this process's view of the shared store."""
        if self._down_since is None:
            state = "shared"
        else:
            state = "fallback" if self.on_failure == "local_fallback" else "down"
        return SharedStats(
            account=self.account,
            state=state,
            calls=self._trips.calls,
            round_trip_us=self._trips.mean() * 1e6,
            round_trip_p50_us=self._trips.median() * 1e6,
            round_trip_p99_us=self._trips.p99() * 1e6,
            members=self._members,
            rpm_in_force=self._rpm_in_force,
            round_trip_allowance=self._lag_in_force,
            failures=self._failures,
            fallback_admissions=self._fallback_admissions,
        )

    def __repr__(self) -> str:
        s = self.stats()
        return f"<RedisLimits account={s.account!r} {s.state} members={s.members} at {self.where}>"


def _where(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.rstrip(".")
