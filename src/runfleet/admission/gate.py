"""The one door every request of the fleet goes through: quota, concurrency, counts, headers.

Callers say what a request is for (:class:`RequestKind`); the gate knows what that weighs
against other requests when the quota is short, so no caller handles priorities or the quota.

Invariant 1 of the design lives here: nothing reaches the server without passing the quota
first, and every answer — success or error — feeds the quota what the server said about its
limits. The SDK's own retries are off on the fleet's client, so this is the only path.

A request that runs the model first reserves its tokens (:meth:`RequestGate.reserve_tokens`,
waiting in the quota's token half), then passes the request quota like any other; a 429 is
read for which limit it hit, so a token 429 pauses creates and tool outputs, never polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

import anyio
import openai
from openai._legacy_response import LegacyAPIResponse

from ..errors import RequestTooLarge, UnreadableBody
from ..stats import StatsCollector
from .estimates import TokenCost
from .headers import limit_hit
from .quota import Priority, RequestQuota
from .token_quota import Reservation

__all__ = ["Outcome", "RequestGate", "RequestKind", "Ticket"]

T = TypeVar("T")


class RequestKind(StrEnum):
    """What a request is for; the stats count by these."""

    CREATE = "create"
    RETRIEVE = "retrieve"
    SUBMIT = "submit"
    FETCH = "fetch"
    CANCEL = "cancel"


class Outcome(StrEnum):
    """How a request ended, as the stats count it."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    NETWORK = "network"
    CLIENT_ERROR = "client_error"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    UNREADABLE = "unreadable"


def classify(exc: BaseException) -> Outcome:
    """Return how a failed request counts; unknown exceptions count as network trouble."""
    if isinstance(exc, openai.RateLimitError):
        return Outcome.RATE_LIMITED
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return Outcome.AUTH
    if isinstance(exc, openai.NotFoundError):
        return Outcome.NOT_FOUND
    if isinstance(exc, openai.InternalServerError):
        return Outcome.SERVER_ERROR
    if isinstance(exc, openai.APIStatusError):
        return Outcome.SERVER_ERROR if exc.status_code >= 500 else Outcome.CLIENT_ERROR
    return Outcome.NETWORK


_PRIORITY = {
    RequestKind.CREATE: Priority.CREATE,
    RequestKind.RETRIEVE: Priority.POLL,
    RequestKind.SUBMIT: Priority.SUBMIT,
    RequestKind.FETCH: Priority.FETCH,
    RequestKind.CANCEL: Priority.CANCEL,
}
"""What each request waits behind when the quota is short (invariant 5): polls wait longest."""


class Ticket:
    """One request admitted ahead of its call: a quota admission and a concurrency slot held.

    The poll loop admits a poll before it knows which run it is for, so that runs waiting to be
    polled stay heap entries instead of becoming tasks that wait on the quota. Spend a ticket
    with :meth:`RequestGate.send`, or :meth:`release` it unspent.
    """

    __slots__ = ("_gate", "_spent", "kind")

    def __init__(self, gate: RequestGate, kind: RequestKind) -> None:
        self._gate = gate
        self._spent = False
        self.kind = kind

    def release(self) -> None:
        """Give the concurrency slot back (the quota admission is spent: rare, cheap)."""
        if not self._spent:
            self._spent = True
            self._gate.limiter.release_on_behalf_of(self)


class RequestGate:
    """Admit, bound, send, count: every request of one fleet.

    Args:
        quota: the request quota every request passes first.
        stats: where requests are counted.
        concurrency: requests in flight at once; size it to the HTTP client's keep-alive pool
            (the SDK's default httpx pool keeps 100 connections alive).
    """

    def __init__(self, quota: RequestQuota, stats: StatsCollector, *, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.quota = quota
        self.stats = stats
        self.limiter = anyio.CapacityLimiter(concurrency)

    async def admit(self, kind: RequestKind, *, since: float | None = None) -> Ticket:
        """Wait for a concurrency slot, then for the quota; return the admission as a ticket.

        ``since``: when the poll's run came due; a poll late past its patience goes before
        creates (:mod:`runfleet.admission.priority`).

        Raises:
            QuotaExhausted: 429s persisted past the quota's patience (no slot is kept).
        """
        ticket = Ticket(self, kind)
        await self.limiter.acquire_on_behalf_of(ticket)
        try:
            await self._acquire(kind, since)
        except BaseException:
            ticket.release()
            raise
        return ticket

    async def _acquire(self, kind: RequestKind, since: float | None = None) -> None:
        """Pass the request quota behind ``kind``'s priority; the wait goes to the stats."""
        start = asyncio.get_running_loop().time()
        await self.quota.acquire(_PRIORITY[kind], since=since)
        self.stats.quota_waited(asyncio.get_running_loop().time() - start)

    async def reserve_tokens(self, cost: TokenCost) -> Reservation:
        """Wait until a request estimated at ``cost`` may spend its tokens; hold them.

        Call it before :meth:`send` for a request that runs the model (a create, tool outputs)
        and pass the reservation along. It waits in the token half of the quota, apart from
        the request queue, so no poll waits behind it.

        Raises:
            RequestTooLarge: the estimate alone exceeds the whole token limit.
        """
        return await self.quota.tokens.reserve(cost)

    def settle_tokens(
        self, reservations: Sequence[Reservation], input_tokens: int, output_tokens: int
    ) -> None:
        """Settle a run's reservations with the ``usage`` the server reported for them."""
        self.quota.tokens.settle(reservations, input_tokens, output_tokens)

    async def send(
        self,
        kind: RequestKind | Ticket,
        call: Callable[[], Awaitable[LegacyAPIResponse[T]]],
        *,
        tokens: Reservation | None = None,
    ) -> tuple[T, Any]:
        """Send one request through the quota; return the parsed body and the headers.

        ``kind`` is what the request is for (it is admitted here, behind its priority), or a
        :class:`Ticket` already admitted by :meth:`admit` (spent by this call). ``tokens`` is
        the request's reservation (:meth:`reserve_tokens`): stamped when the request leaves,
        given back whole if the server refuses it, or if it never leaves.

        Raises:
            RequestTooLarge: the server said the request alone exceeds its token limit.
            openai.APIError: the request failed; it was counted and the quota told.
            UnreadableBody: a 2xx answer came back that cannot be parsed.
        """
        if isinstance(kind, Ticket):
            try:
                return await self._send(kind.kind, call, tokens)
            finally:
                kind.release()
        try:
            await self._acquire(kind)
        except BaseException:
            if tokens is not None:
                tokens.release()
            raise
        async with self.limiter:
            return await self._send(kind, call, tokens)

    async def _send(
        self,
        kind: RequestKind,
        call: Callable[[], Awaitable[LegacyAPIResponse[T]]],
        tokens: Reservation | None,
    ) -> tuple[T, Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stats.request_started(kind, started)
        if tokens is not None:
            tokens.sent()
        since = self.quota.tokens.mark()  # answers come back out of order (TokenBudget.learn)
        try:
            raw = await call()
        except openai.APIStatusError as exc:
            self.stats.request_done(classify(exc), kind)
            if tokens is not None:
                since += tokens.answered()  # its own answer: not one answered meanwhile
                tokens.release()  # a refused request is charged nothing
            # A 429 pauses what its limit covers until its retry-after (the quota reads it).
            hit = limit_hit(exc.type, exc.message) if exc.status_code == 429 else "requests"
            headers = exc.response.headers
            self.quota.observe(
                headers,
                status=exc.status_code,
                limit=hit,
                since=since,
                message=exc.message,
                trip=loop.time() - started,
            )
            if exc.status_code == 429:
                await self.quota.publish()  # the other processes on the account pause too
            if hit == "too_large":
                charged = tokens.charged if tokens is not None else None
                limit = self.quota.tokens.budget.limit
                raise RequestTooLarge(charged, limit, exc.message) from exc
            raise
        except openai.APIError as exc:
            # A dropped or cancelled request may have been charged: its tokens stay counted,
            # but no answer will come: later answers count it if the server did.
            self.stats.request_done(classify(exc), kind)
            if tokens is not None:
                tokens.answered(heard=False)
            raise
        except BaseException:
            if tokens is not None:
                tokens.answered(heard=False)  # cancelled on the way: no answer will come
            raise
        if tokens is not None:
            since += tokens.answered()  # before the headers that count it are read
        self.quota.observe(
            raw.headers, status=raw.status_code, since=since, trip=loop.time() - started
        )
        try:
            parsed = raw.parse()
        except (ValueError, openai.APIResponseValidationError) as exc:
            # A 2xx whose body is garbled or cut: the server did the work, we cannot read it.
            self.stats.request_done(Outcome.UNREADABLE, kind)
            raise UnreadableBody(str(kind), f"{type(exc).__name__}: {exc}") from exc
        self.stats.request_done(Outcome.OK, kind)
        return parsed, raw.headers
