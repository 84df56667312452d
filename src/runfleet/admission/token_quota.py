"""The token half of the one door: creates and tool outputs wait here for tokens, polls never.

A request that runs the model (a create, a tool-output follow-up) reserves its estimated cost
with :meth:`TokenQuota.reserve` *before* it queues for a request slot. This is a gate of its
own, in front of :class:`~runfleet.admission.priority.AdmissionQueue`, on purpose: that queue
has one head that sleeps for everyone, and a create waiting there for tokens would hold the
head, or a slot, while polls that cost no tokens could go. Here only token-costing requests
wait, in arrival order, with one of them sleeping on the budget; a poll never meets them
(invariant 1: a token limit delays creates, not polls).

What a request costs is estimated by its kind adapter (:class:`TokenCost`: the text it sends,
counted by :func:`count_tokens`, and its ``max_output_tokens``); this module corrects the
estimate by what it learned of each model's real input (:class:`TokenEstimates`) and settles
it when the run reports its ``usage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import anyio

from ..errors import RequestTooLarge
from ..logs import get_logger
from ..stats import quantile
from .headers import parse_rate_limit_headers
from .shared import RedisLimits
from .tokens import TokenBudget, TokenEntry

__all__ = [
    "Reservation",
    "TokenCost",
    "TokenEstimates",
    "TokenQuota",
    "TokenStats",
    "count_tokens",
]

log = get_logger(__name__)

CHARS_PER_TOKEN = 4
"""The character rule: OpenAI's own rule of thumb for English text, about 4 characters a token.

The hook for an exact count is :class:`TokenEstimates`' ``counter``: pass a function that
counts with an offline tokenizer (one that ships its encodings; nothing may download at run
time). What the rule gets wrong is learned per model from ``usage`` either way.
"""


def count_tokens(texts: Iterable[str]) -> int:
    """Estimate the tokens of some text by the character rule (characters / 4, rounded up)."""
    return math.ceil(sum(len(text) for text in texts) / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class TokenCost:
    """What a request may cost before it is sent, as its adapter reads it from the request.

    Attributes:
        model: what its estimation error is learned by.
        texts: the text the request sends (image parts and files are not counted).
        output: the output reservation the request sets (``max_output_tokens``), if any.
    """

    model: str
    texts: tuple[str, ...]
    output: int | None = None


class TokenEstimates:
    """Turn a request's text into the tokens to reserve, and learn each model's error.

    The server charges its own count of the input; the fleet's rule is a guess at it. After
    each settled run the ratio of the server's input to the fleet's guess moves towards what
    was seen (a moving average), per model, and later estimates are multiplied by it. The key
    is the model, or an Assistants run's assistant id when it names no model, so a service that
    makes assistants as it goes would add one per run: at most ``max_models`` are kept, the
    least recently learned forgotten first (it starts again from 1.0).

    The mean is what a request is counted at, not what it is admitted by: single requests
    stray far from it (a workload whose input barely follows its text strays by 50x), and
    one that costs the server more than the room the fleet waited for is a 429. So the real
    inputs are also kept (the last ``samples`` per model), and :meth:`headroom` asks for room
    for a high ``quantile`` of them (or for the estimate, if higher). Asking for more room
    than a request will use costs no throughput: the buckets keep draining meanwhile, and
    waiting for a level below the top wastes no refill. A bound by the ratio's own quantile
    times the request's count was tried and undercut: where input does not follow the text,
    a short prompt's bound is far too low.

    Args:
        counter: counts the tokens of some text (the character rule by default).
        default_output: the output reserved when a request sets no ``max_output_tokens``: what
            the server reserves then, so the fleet's count and the server's agree until usage
            settles them.
        max_models: most models whose ratio is kept.
    """

    def __init__(
        self,
        counter: Callable[[Iterable[str]], int] = count_tokens,
        *,
        default_output: int = 1000,
        weight: float = 0.2,
        max_models: int = 1024,
        quantile: float = 0.99,
        samples: int = 200,
    ) -> None:
        if isinstance(default_output, bool) or not isinstance(default_output, int):
            raise ValueError(f"default_output must be a whole number, got {default_output!r}")
        if default_output < 1:
            raise ValueError(f"default_output must be at least 1 token, got {default_output!r}")
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models!r}")
        self.counter = counter
        self.default_output = default_output
        self.weight = weight
        self.max_models = max_models
        self.quantile = quantile
        self.ratios: OrderedDict[str, float] = OrderedDict()  # least recently learned first
        self._sums: dict[str, tuple[float, float]] = {}  # decayed real and counted input
        self._inputs: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=samples))

    def raw_input(self, cost: TokenCost) -> int:
        """Return the counter's input tokens for ``cost``, before any learned correction."""
        return self.counter(cost.texts)

    def charge(self, cost: TokenCost, raw_input: int) -> int:
        """Return the tokens to reserve: corrected input plus the output reservation."""
        inp = math.ceil(raw_input * self.ratios.get(cost.model, 1.0))
        out = cost.output if cost.output is not None else self.default_output
        return max(1, inp + out)

    def headroom(self, cost: TokenCost, raw_input: int) -> int:
        """Return the room a request must find: a high quantile of its possible real cost.

        Until a model has settled a few runs this is its charge; nothing is known yet.
        """
        charge = self.charge(cost, raw_input)
        inputs = self._inputs.get(cost.model)
        if inputs is None or len(inputs) < _MIN_SAMPLES:
            return charge
        high = quantile(sorted(inputs), self.quantile, upper=True)
        out = cost.output if cost.output is not None else self.default_output
        return max(charge, math.ceil(high) + out)

    def learn(self, model: str, raw_input: int, real_input: int) -> None:
        """Move the model's ratio towards ``real_input / raw_input``; keep the real input."""
        if raw_input <= 0 or real_input <= 0:
            return
        seen = min(_MAX_RATIO, max(1 / _MAX_RATIO, real_input / raw_input))
        # A ratio of (decaying) sums, not a mean of ratios: the mean weighs a short prompt's
        # lesson as much as a long one's and overcharges whenever input does not follow text.
        real, raw = self._sums.get(model, (0.0, 0.0))
        real, raw = real * (1 - self.weight) + raw_input * seen, raw * (1 - self.weight) + raw_input
        self._sums[model] = (real, raw)
        self.ratios.pop(model, None)
        self.ratios[model] = real / raw  # the most recently learned last
        self._inputs[model].append(real_input)
        if len(self.ratios) > self.max_models:
            forgotten, _ = self.ratios.popitem(last=False)
            self._sums.pop(forgotten, None)
            self._inputs.pop(forgotten, None)


_MIN_SAMPLES = 10  # settled runs before a quantile of them means anything
_MAX_RATIO = 1000.0  # a bound on one run's lesson, so a 1-character prompt cannot teach 1e6


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

    def answered(self) -> None:
        """The server's answer came back: the remaining-tokens it sends from now counts it."""
        self.quota.budget.answered(self.entry)

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
        last_minute: tokens held against the limit now (sent in the last 60 s, or in flight).
        peak_window: the most tokens held in any 60 s, at an admission.
        charged, given_back: tokens reserved in all, and given back when usage settled.
        used: tokens the settled runs really used (input + output).
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
    server_remaining: float | None = None


class TokenQuota:
    """Admit token-costing requests so that tokens in any minute stay within the limit.

    Args:
        tpm: tokens per minute never to exceed in any 60 s window; None learns the limit from
            ``x-ratelimit-limit-tokens`` (until then tokens are only counted).
        estimates: how a request's text becomes tokens, and what was learned of its error.

    Raises:
        ValueError: ``tpm`` is not a positive, finite number.
    """

    def __init__(
        self,
        tpm: float | None = None,
        *,
        estimates: TokenEstimates | None = None,
        shared: RedisLimits | None = None,
    ):
        if tpm is not None and (
            isinstance(tpm, bool)
            or not isinstance(tpm, int | float)
            or not math.isfinite(tpm)
            or tpm <= 0
        ):
            raise ValueError(f"tpm must be a positive number of tokens per minute, got {tpm!r}")
        self.budget = TokenBudget(None if tpm is None else float(tpm))
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
                    wait = self.budget.wait_for(now, charge, room)
                    if wait == 0.0 and self._shared is not None and limit is not None:
                        wait = await self._shared.reserve_tokens(charge, limit)  # the account's
                    if wait == 0.0:
                        break
                    await self._sleep(wait)
        finally:
            self._waiting -= 1
        entry = self.budget.take(now, charge)
        self._charged += charge
        return Reservation(self, entry, cost, raw, charge)

    def stamp(self, reservation: Reservation) -> None:
        """Count a reservation's tokens from now (its request leaves)."""
        self.budget.sent(reservation.entry, self._now())
        self._wake()

    def release(self, reservation: Reservation) -> None:
        """Give all of a reservation back: the server charged nothing for its request."""
        if reservation.entry.live:
            self._give_back(reservation.entry.tokens)
            self.budget.release(reservation.entry, self._now())
            self._wake()

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
        self.estimates.learn(reservations[0].cost.model, raw, input_tokens)
        used = input_tokens + output_tokens
        self._used += used
        charged = sum(r.charged for r in reservations)
        now = self._now()
        for r in reservations:
            share = used * r.charged / charged if charged else 0.0
            self._give_back(self.budget.settle(r.entry, share, now))
        self._wake()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the token limit and what remains of it from one response's headers."""
        parsed = parse_rate_limit_headers(headers, "tokens")
        before = self.budget.limit
        self.budget.learn(self._now(), parsed)
        if self.budget.limit != before:
            log.info("token_limit_learned", limit=self.budget.limit, tpm=self.budget.tpm)
            self._wake()  # a waiter may fit now, or never (then it fails alone)
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

    def _wake(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def _now(self) -> float:
        with contextlib.suppress(RuntimeError):
            self._last_now = asyncio.get_running_loop().time()
        return self._last_now
