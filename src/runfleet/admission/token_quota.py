"""The token half of the one door: creates and tool outputs wait here for tokens, polls never.

A request that runs the model (a create, a tool-output follow-up) reserves its estimated cost
with :meth:`TokenQuota.reserve` *before* it queues for a request slot. This is a gate of its
own, in front of :class:`~runfleet.admission.priority.AdmissionQueue`, on purpose: that queue
has one head that sleeps for everyone, and a create waiting there for tokens would hold the
head, or a slot, while polls that cost no tokens could go. Here only token-costing requests
wait, in arrival order, with one of them sleeping on the budget; a poll never meets them
(invariant 1: a token limit delays creates, not polls).

What a request costs is estimated by its kind adapter (:class:`~.estimates.TokenCost`: the
text it sends and its ``max_output_tokens``), corrected by what was learned of each model
(:class:`~.estimates.TokenEstimates`), and settled here when the run reports its ``usage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio

from ..errors import RequestTooLarge
from ..logs import get_logger
from .estimates import TokenCost, TokenEstimates
from .headers import parse_rate_limit_headers
from .shared import RedisLimits
from .tokens import TokenBudget, TokenEntry

__all__ = ["Reservation", "TokenQuota", "TokenStats"]

log = get_logger(__name__)


class Reservation:
    """The tokens one request holds: stamped when it leaves, settled when usage is known."""

    __slots__ = ("charged", "cost", "entry", "quota", "raw_input")

    def __init__(
        self, quota: TokenQuota, entry: TokenEntry, cost: TokenCost, raw_input: int, charged: int
    ) -> None:
        self.quota = quota
        self.entry = entry
        self.cost = cost
        self.raw_input = raw_input
        self.charged = charged

    def sent(self) -> None:
        """The request leaves now: its tokens count 60 s from here."""
        self.quota.stamp(self)

    def answered(self, *, heard: bool = True) -> float:
        """The request is over (answered, or dropped: ``heard`` False): later answers count it.

        Returns what this added to the budget's :meth:`~TokenBudget.mark`: the headers of
        this very answer count the request, so their ``since`` must not.
        """
        return self.quota.answered(self, heard=heard)

    def release(self) -> None:
        """The server refused the request and charged nothing: give every token back."""
        self.quota.release(self)


@dataclass(frozen=True, slots=True)
class TokenStats:
    """A snapshot of the token budget; ``limit`` None means tokens are not limited.

    Attributes:
        tpm: the configured limit.
        server_limit: the limit the server's headers said.
        limit: the limit in force (the lower of the two).
        last_minute: tokens held against the limit now (sent in the last 60 s, or in flight):
            what runs used once settled, what was reserved until then.
        peak_window: the most tokens held in any 60 s, at an admission.
        charged, given_back: tokens reserved in all, and given back when usage settled.
        used: tokens the settled runs really used (input + output).
        used_last_minute: tokens used by runs whose usage was reported in the last 60 s.
        used_peak_window: the most tokens used in any 60 s, by when usage was reported.
        waiting: requests waiting for tokens.
        paused_for: seconds until a token 429's pause lifts.
        rate_limited: token 429s received.
        too_large: requests refused because they alone exceed the limit.
        ratios: per model, the server's input over the fleet's estimate, as learned.
        server_remaining: the last ``x-ratelimit-remaining-tokens`` the server sent.
    """

    tpm: float | None
    server_limit: float | None
    limit: float | None
    last_minute: float
    peak_window: float
    charged: int
    given_back: float
    used: int
    waiting: int
    paused_for: float
    rate_limited: int
    too_large: int
    ratios: Mapping[str, float]
    used_last_minute: float
    used_peak_window: float
    server_remaining: float | None = None


class TokenQuota:
    """Admit token-costing requests so that tokens in any minute stay within the limit.

    Args:
        tpm: tokens per minute never to exceed in any 60 s window; None learns the limit from
            ``x-ratelimit-limit-tokens`` (until then tokens are only counted).
        estimates: how a request's text becomes tokens, and what was learned of its error.
        minute: the seconds of the loop clock the limit is for (see :class:`TokenBudget`):
            60 but against a simulator whose time is scaled.

    Raises:
        ValueError: ``tpm`` is not a positive, finite number.
    """

    def __init__(
        self,
        tpm: float | None = None,
        *,
        estimates: TokenEstimates | None = None,
        shared: RedisLimits | None = None,
        minute: float = 60.0,
    ):
        if tpm is not None and (
            isinstance(tpm, bool)
            or not isinstance(tpm, int | float)
            or not math.isfinite(tpm)
            or tpm <= 0
        ):
            raise ValueError(f"tpm must be a positive number of tokens per minute, got {tpm!r}")
        self.budget = TokenBudget(None if tpm is None else float(tpm), minute=minute)
        self.estimates = estimates if estimates is not None else TokenEstimates()
        self._shared = shared
        self._lock = asyncio.Lock()  # arrival order; its holder is the one that sleeps
        self._kick: asyncio.Event | None = None
        self._last_now = 0.0
        self._waiting = 0
        self._charged = 0
        self._given_back = 0.0
        self._used = 0
        self._too_large = 0
        self._told_unlimited = False
        self._heard = False  # an answer came back: the server said whether tokens are limited

    async def reserve(self, cost: TokenCost) -> Reservation:
        """Wait until the tokens ``cost`` is estimated at may be spent; hold them.

        Raises:
            RequestTooLarge: the estimate alone exceeds the whole limit (at once, or when a
                lower limit is learned while it waits); nothing else waits on it.
        """
        raw = self.estimates.raw_input(cost)
        charge = self.estimates.charge(cost, raw)
        self._check_fits(charge)
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    # Priced again at each turn, not once on arrival: a batch queues its
                    # whole file at the start, before the first run has taught anything.
                    charge = self.estimates.charge(cost, raw)
                    headroom = self.estimates.headroom(cost, raw)
                    self._check_fits(charge)
                    now = self._now()
                    limit = self.budget.limit
                    room = headroom if limit is None else min(headroom, limit)
                    wait = await self._wait(now, charge, room, self.estimates.bound(cost, raw))
                    if wait == 0.0:
                        break
                    await self._sleep(wait)
        finally:
            self._waiting -= 1
        entry = self.budget.take(now, charge)
        self._charged += charge
        return Reservation(self, entry, cost, raw, charge)

    async def _wait(self, now: float, charge: int, room: float, bound: float) -> float:
        """Return the seconds before ``charge`` may go (0.0: now); the account is asked last."""
        wait = self.budget.wait_for(now, charge, room, bound)
        if wait > 0.0:
            return wait  # this process's own budget holds it back
        limit = self.budget.limit
        if limit is None:
            # Nothing says yet whether tokens are limited: one request at a time until an
            # answer does, not a burst into a limit learned too late.
            return math.inf if not self._heard and self.budget.unanswered else 0.0
        if self._shared is not None:
            return await self._shared.reserve_tokens(charge, limit)  # the account's, on Redis
        return 0.0

    def stamp(self, reservation: Reservation) -> None:
        """Count a reservation's tokens from now (its request leaves)."""
        self.budget.sent(reservation.entry, self._now())
        self.wake()

    def answered(self, reservation: Reservation, *, heard: bool = True) -> float:
        """Date a reservation's answer (see :meth:`Reservation.answered`); wake the waiter."""
        added = self.budget.answered(reservation.entry, self._now(), heard=heard)
        self.wake()  # the ledger may free it a minute from now, not from its departure
        return added

    def release(self, reservation: Reservation) -> None:
        """Give all of a reservation back: the server charged nothing for its request."""
        if reservation.entry.live:
            self._give_back(reservation.entry.tokens)
            self.budget.release(reservation.entry, self._now())
            self.wake()

    def settle(
        self, reservations: Sequence[Reservation], input_tokens: int, output_tokens: int
    ) -> None:
        """Settle a run's reservations with the ``usage`` it reported, and learn from it.

        Several reservations share one usage when a run's passes are summed (an Assistants
        run and its tool-output submissions): the real tokens are shared out in proportion
        to what each reserved.
        """
        if not reservations:
            return
        raw = sum(r.raw_input for r in reservations)
        first = reservations[0].cost
        unbounded = output_tokens if first.output is None else None
        self.estimates.learn(first.model, raw, input_tokens, unbounded)
        used = input_tokens + output_tokens
        self._used += used
        charged = sum(r.charged for r in reservations)
        now = self._now()
        self.budget.record_used(now, used)
        for r in reservations:
            share = used * r.charged / charged if charged else 0.0
            self._give_back(self.budget.settle(r.entry, share, now))
        self.wake()

    def mark(self) -> float:
        """Return what to pass as ``since`` to :meth:`observe` for a request sent now."""
        return self.budget.mark()

    def observe(self, headers: Mapping[str, str], since: float | None = None) -> None:
        """Learn the token limit and what remains of it from one response's headers.

        ``since``: :meth:`mark` as it was when that response's request was sent.
        """
        parsed = parse_rate_limit_headers(headers, "tokens")
        before = self.budget.limit
        self._heard = True
        self.budget.learn(self._now(), parsed, since)
        if self.budget.limit != before:
            log.info("token_limit_learned", limit=self.budget.limit, tpm=self.budget.tpm)
            self.wake()  # a waiter may fit now, or never (then it fails alone)
        # Said once: every answer would repeat it. Not for one answer without headers after a
        # limit is known (an error page from a proxy): the known limit still holds.
        if parsed.limit is None and self.budget.limit is None and not self._told_unlimited:
            self._told_unlimited = True
            log.info("tokens_not_limited", reason="no tpm set and no token headers sent")

    def on_rate_limited(self, retry_after: float | None) -> None:
        """Pause token-costing requests after a token 429; polls go on."""
        now = self._now()
        echo = now < self.budget.paused_until  # one already in flight when the first came back
        self.budget.on_rate_limited(now, retry_after)
        if echo:
            log.debug("token_quota_paused", retry_after=retry_after)
        else:
            log.warning("token_quota_paused", retry_after=retry_after)

    def on_too_large(self) -> None:
        """Count a request the server refused as too large for the whole limit."""
        self._too_large += 1

    def stats(self) -> TokenStats:
        """Return a snapshot of the limit, the tokens held and what was learned."""
        now = self._now()
        budget = self.budget
        return TokenStats(
            tpm=budget.tpm,
            server_limit=budget.server_limit,
            limit=budget.limit,
            last_minute=budget.held(now),
            peak_window=budget.peak,
            charged=self._charged,
            given_back=self._given_back,
            used=self._used,
            waiting=self._waiting,
            paused_for=max(0.0, budget.paused_until - now),
            rate_limited=budget.rate_limited,
            too_large=self._too_large,
            ratios=dict(self.estimates.ratios),
            server_remaining=budget.server_remaining,
            used_last_minute=budget.used_last_minute(now),
            used_peak_window=budget.used_peak,
        )

    def _give_back(self, tokens: float) -> None:
        self._given_back += tokens
        if self._shared is not None:
            self._shared.give_back(tokens)  # to the account's bucket, with the next call

    def _check_fits(self, charge: int) -> None:
        limit = self.budget.limit
        if limit is not None and charge > limit:
            self._too_large += 1
            raise RequestTooLarge(charge, limit)

    async def _sleep(self, wait: float) -> None:
        """Sleep ``wait`` seconds, or until tokens come back or the limit changes."""
        self._kick = kick = asyncio.Event()
        with anyio.move_on_after(wait if math.isfinite(wait) else 60.0):
            await kick.wait()

    def wake(self) -> None:
        """Let the request waiting for tokens look again (something it waits on changed)."""
        if self._kick is not None:
            self._kick.set()

    def _now(self) -> float:
        with contextlib.suppress(RuntimeError):
            self._last_now = asyncio.get_running_loop().time()
        return self._last_now
