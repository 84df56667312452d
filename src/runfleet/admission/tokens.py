"""The token budget's pure accounting: how many tokens may be reserved now, and when more may.

Everything here takes ``now`` (seconds on the event loop's clock) and reads no clock, like
:mod:`runfleet.admission.bucket`; :class:`~runfleet.admission.token_quota.TokenQuota` owns the
clock and the waiting.

Two checks, each for its own reason:

* **The ledger** holds invariant 1 for tokens exactly: the tokens of every request sent in the
  last 60 s, plus those admitted and not yet sent, plus the new one, never exceed the limit.
  An entry counts in full from its admission (a create may still wait for a request slot)
  until a minute after its request's *answer*: the server admitted it at some moment between
  its departure and its answer, so a request admitted later than that minute cannot share a
  minute of the server's with it. The entry admitted last in any 60 s window of the server's
  saw every other one of it either in flight or answered within the minute before its own
  admission. The answer, not the departure plus an allowance for the way: at time scale 0.1
  a quarter second of allowance was 2.5 s of the account's minute (the tokens bench spent
  87 % of the limit with it, 90 % without).
  A request still unanswered, or dropped, counts a minute and ``delay_allowance`` past its
  departure (or its drop), as before answers were dated.
* **The bucket** spreads the minute: a ledger alone would let a whole minute's tokens out at
  once, which a server enforcing sub-minute windows refuses. It drains at ``limit / 60`` per
  second from a capacity of one second's share, or the server's bucket once its headers tell
  its size (at most ten seconds' share); a request larger than that waits for an empty
  bucket and leaves it in debt (as OpenAI's limiter does), so sustained throughput is the
  limit whatever the request sizes.

Reconciliation moves an entry's tokens to what the run really used, in the ledger while the
entry is in it and in the bucket's level: the difference is given back (or taken) at once.

The server's ``x-ratelimit-remaining-tokens`` is believed over the fleet's own count, on every
answer: it also sees other processes on the account and the real input of every request the
server admitted, which the fleet only learns when a run ends. The header is read as a fraction
of the server's bucket (``remaining / limit``), whose size is inferred from ``reset``: the bucket
refills at ``limit / 60`` a second, so ``reset * limit / 60`` tokens are missing from it. That
reading is exact both for a bucket that holds a whole minute (OpenAI's documented shape, where
it gives ``remaining`` back) and for one enforced over a shorter window (the simulator's
``window``, where ``remaining`` alone would claim up to 60 / window times too much). What the
server held at its last answer, refilled since, minus what this budget admitted that the answer
cannot have counted (requests not yet answered), must cover a request's *headroom* before it
goes.

Headroom, not the estimate: a request's estimate is the expected cost, and the real cost of the
next one can be far above it. Waiting for room for a high quantile of the real costs seen, while
counting only the expected cost, keeps the server's bucket from running short and still spends
the whole limit: the level only swings below the bucket's top, so no refill is wasted.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .headers import RateLimitHeaders

__all__ = ["TokenBudget", "TokenEntry"]

WINDOW = 60.0  # seconds: the limit is per minute, and headers count per minute of the clock
_SLIVER = 1e-9  # waits shorter than the clock can represent are admitted (see bucket.py)
_ROUNDING = 0.002  # of the server's bucket: more than its headers' rounding can hide
# Seconds an answered entry counts past its minute: a request sent exactly a minute after
# another's answer shares a 60 s window with it in float arithmetic (298.025361 - 60 rounds
# below 238.025361), as a server answering in no time (in-process, on a fake clock) shows.
_EDGE = 1e-3


class TokenEntry:
    """The tokens one request holds against the budget; ``stamp`` is None until it is sent."""

    __slots__ = ("answered", "live", "stamp", "tokens", "until")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.stamp: float | None = None
        self.until = math.inf  # when it leaves the ledger: set when sent, moved when answered
        self.live = True  # still counted in the ledger (not expired, not released)
        self.answered = False  # the server's answer to its request came back


@dataclass(slots=True)
class _ServerView:
    """What the last response said of the account's tokens, and what was taken since."""

    available: float  # tokens in the server's bucket at its answer
    capacity: float  # the size of the server's bucket, as inferred (see the module docstring)
    at: float
    taken: float = 0.0  # admitted here that the answer did not count


class TokenBudget:
    """Tokens per minute: at most ``limit`` reserved in any 60 s, spread a second at a time.

    Args:
        tpm: the configured limit; None until a server tells one (then nothing is limited).
        default_pause: the pause after a token 429 that names no retry-after.
        max_pause: the longest pause honoured.
        minute: the seconds of the clock the limit is for: 60, except against a simulator
            whose time runs faster (at time scale 0.1 a minute of its account lasts 6 s; the
            server's headers, per minute of the client's clock, are converted).
        delay_allowance: seconds an entry counts past its minute. Requests that left a minute
            apart can reach the server closer together than that (one waits longer on the way);
            counting each a little longer keeps any minute of *arrivals* within the limit too,
            as :class:`~runfleet.admission.quota.RequestQuota` does for requests.
    """

    def __init__(
        self,
        tpm: float | None,
        *,
        default_pause: float = 1.0,
        max_pause: float = 120.0,
        minute: float = WINDOW,
        delay_allowance: float = 0.25,
    ) -> None:
        if not (math.isfinite(minute) and minute > 0):
            raise ValueError(f"minute must be a positive number of seconds, got {minute!r}")
        self.minute = minute
        self._span = minute + max(0.0, delay_allowance)  # how long a sent entry counts
        self.tpm = tpm
        self.server_limit: float | None = None
        self.server_remaining: float | None = None
        self.default_pause = default_pause
        self.max_pause = max_pause
        self.paused_until = -math.inf
        self.rate_limited = 0
        self.peak = 0.0  # the most tokens the ledger held after an admission
        self.used_peak = 0.0  # the most tokens used in any 60 s, by when usage was known
        self._used: deque[tuple[float, float]] = deque()  # (settled at, tokens used)
        self._used_sum = 0.0
        self._pending = 0.0  # admitted, not yet sent
        self._sent: deque[TokenEntry] = deque()  # in stamp order (``until`` nearly so)
        self._sent_sum = 0.0
        self._level = 0.0
        self._as_of = -math.inf
        self._server: _ServerView | None = None
        self._unanswered = 0.0  # tokens of requests admitted whose answer has not come back
        self._answered_total = 0.0  # tokens of every answer come back so far (see ``mark``)
        self._capacity: float | None = None  # the server bucket's size, once inferred

    @property
    def limit(self) -> float | None:
        """The tokens per minute in force: the configured limit, or the server's if lower."""
        if self.server_limit is None:
            return self.tpm
        if self.tpm is None:
            return self.server_limit
        return min(self.tpm, self.server_limit)

    @property
    def unanswered(self) -> float:
        """Tokens of requests admitted whose answer has not come back yet."""
        return self._unanswered

    def held(self, now: float) -> float:
        """Return the tokens counted against the limit at ``now`` (in flight or sent < 60 s)."""
        self._expire(now)
        return self._pending + self._sent_sum

    def wait_for(
        self,
        now: float,
        tokens: float,
        headroom: float | None = None,
        bound: float | None = None,
    ) -> float:
        """Return 0.0 if ``tokens`` may be reserved at ``now``, else the seconds to wait.

        ``headroom`` (at least ``tokens``) is the room the server's count must have first:
        what the request may really cost. ``bound`` (at least ``tokens``) is the room the
        ledger must have: the most the request can use (its output reservation, not the p95
        it is counted at). Counted at its estimate alone, the newest request of a full minute
        carried it over when it used more (the tokens bench: one window of 40,060 of 40,000,
        its last request 166 tokens above its estimate when the ledger had 106 left).
        ``math.inf`` means only a change can admit it (an entry leaving or being settled), not
        time alone. Callers check that ``tokens`` fits the limit at all first.
        """
        room_for = tokens if headroom is None else max(tokens, headroom)
        limit = self.limit
        if limit is None:
            return 0.0
        if now < self.paused_until:
            return self.paused_until - now
        rate = limit / self.minute
        self._drain(now, rate)
        # The bucket: room for ``tokens`` below its burst, or empty for a bigger one. The
        # fleet's own bucket asks room for the estimate only: it counts the output reservation
        # until usage settles, long after the server gave it back, so asking it for headroom
        # too would leave refills unspent. The server's count asks for headroom.
        room = max(0.0, self._burst(limit) - tokens)
        waits = [max(0.0, self._level - room) / rate]
        # The ledger: the oldest sent entries must leave until ``tokens`` fits beside the rest.
        need = tokens if bound is None else max(tokens, min(bound, limit))  # an empty minute fits
        excess = self.held(now) + need - limit
        if excess > _SLIVER:
            waits.append(self._until_freed(now, excess))
        waits.append(self._server_wait(now, room_for))
        wait = max(waits)
        return wait if wait > _SLIVER else 0.0

    def take(self, now: float, tokens: float) -> TokenEntry:
        """Reserve ``tokens`` (after :meth:`wait_for` said 0.0); the entry counts until sent."""
        limit = self.limit
        if limit is not None:
            # Unlimited tokens fill no bucket: a limit learned later must not find it deep.
            self._drain(now, limit / self.minute)
            self._level += tokens
        self._pending += tokens
        self._unanswered += tokens
        if self._server is not None:
            self._server.taken += tokens
        entry = TokenEntry(tokens)
        self.peak = max(self.peak, self.held(now))
        return entry

    def sent(self, entry: TokenEntry, now: float) -> None:
        """Stamp the entry as sent at ``now``: it counts 60 s from here."""
        if entry.live and entry.stamp is None:
            entry.stamp = now
            entry.until = now + self._span
            self._pending -= entry.tokens
            self._sent.append(entry)
            self._sent_sum += entry.tokens

    def mark(self) -> float:
        """Return a mark to pass to :meth:`learn` with the answer of a request sent now."""
        return self._answered_total

    def answered(self, entry: TokenEntry, now: float, *, heard: bool = True) -> float:
        """The server answered the entry's request: later answers count its tokens themselves.

        ``heard`` False: the request was dropped or cancelled on its way, and the server may
        still admit it; it counts a minute and the delay allowance from ``now``. Returns the
        tokens this added to :meth:`mark` (none if it was answered before).
        """
        if entry.answered:
            return 0.0
        if entry.stamp is not None:
            # Admitted by the server before its answer: a minute from the answer covers it.
            entry.until = now + self.minute + _EDGE if heard else max(entry.until, now + self._span)
        entry.answered = True
        self._unanswered -= entry.tokens
        self._answered_total += entry.tokens
        if self._unanswered < _SLIVER:
            self._unanswered = 0.0  # float drift cannot outlive the last answer
        return entry.tokens

    def settle(self, entry: TokenEntry, tokens: float, now: float) -> float:
        """Move the entry to the tokens really used; return what was given back (or taken)."""
        delta = entry.tokens - tokens
        if not entry.answered:
            self._unanswered -= delta
        if entry.live:
            if entry.stamp is None:
                self._pending -= delta
            else:
                self._sent_sum -= delta
        entry.tokens = tokens
        self._drain(now, (self.limit or 0.0) / self.minute)
        self._level = max(0.0, self._level - delta)
        return delta

    def record_used(self, now: float, tokens: float) -> None:
        """Count ``tokens`` a run really used, as of ``now`` (its usage was just reported)."""
        self._used.append((now, tokens))
        self._used_sum += tokens
        self.used_peak = max(self.used_peak, self.used_last_minute(now))

    def used_last_minute(self, now: float) -> float:
        """Return the tokens runs really used whose usage was reported in the last 60 s."""
        used, horizon = self._used, now - self.minute
        while used and used[0][0] <= horizon:
            self._used_sum -= used.popleft()[1]
        if not used:
            self._used_sum = 0.0  # float drift cannot outlive an empty window
        return self._used_sum

    def release(self, entry: TokenEntry, now: float) -> None:
        """Give every token of a request the server did not charge back (it failed)."""
        self.settle(entry, 0.0, now)
        entry.live = False  # an empty entry left in the deque is skipped when it expires

    def learn(self, now: float, headers: RateLimitHeaders, since: float | None = None) -> None:
        """Adopt the server's limit and believe its count of what remains.

        ``since`` is :meth:`mark` taken when the request these headers answer was sent. Answers
        come back out of order: a poll the server counted *before* a create may be read
        *after* the create's answer, and its count does not hold that create. So everything
        answered since the request left is taken from its count too, as well as everything
        not answered yet; without ``since``, only the latter.
        """
        per_minute = self.minute / WINDOW  # the headers' minute is the clock's
        if headers.limit is not None:
            self.server_limit = headers.limit * per_minute
        if headers.remaining is not None:
            self.server_remaining = headers.remaining  # as said, for the operators' metrics
        limit = headers.limit if headers.limit is not None else (self.limit or 0) / per_minute
        if headers.remaining is None or headers.reset is None or not limit:
            return
        fraction = min(1.0, max(0.0, headers.remaining / limit))
        missing = headers.reset * limit / WINDOW
        if fraction <= 0.95:
            # Nearer full, a header rounded to whole tokens and milliseconds says too little.
            self._capacity = missing / (1.0 - fraction)
        capacity = self._capacity if self._capacity is not None else limit
        available = max(0.0, capacity - missing) if fraction < 1.0 else capacity
        taken = self._unanswered
        if since is not None:
            taken += max(0.0, self._answered_total - since)
        self._server = _ServerView(available, capacity, now, taken=taken)

    def on_rate_limited(self, now: float, retry_after: float | None) -> None:
        """Pause token admissions for the retry-after (polls cost none and go on)."""
        self.rate_limited += 1
        pause = self.default_pause
        if retry_after is not None and math.isfinite(retry_after):
            pause = min(max(retry_after, 0.0), self.max_pause)
        self.paused_until = max(self.paused_until, now + pause)

    def server_available(self, now: float) -> float | None:
        """Return the tokens the server's bucket holds for this budget at ``now``, if known."""
        view = self._server
        limit = self.limit
        if view is None or not limit:
            return None
        refilled = view.available + (now - view.at) * limit / self.minute
        return min(view.capacity, refilled) - view.taken

    def _server_wait(self, now: float, tokens: float) -> float:
        available = self.server_available(now)
        if available is None or self._server is None or not self.limit:
            return 0.0
        # A request larger than the bucket goes when it is full (the server takes it into debt).
        # Headers round (whole tokens of a minute's limit, milliseconds): a request that needs
        # the count to the last token asks a little more, or it meets a 429 by a token.
        capacity = self._server.capacity
        need = min(tokens + _ROUNDING * capacity + 1.0, capacity)
        if available >= need:
            return 0.0
        return (need - available) / (self.limit / self.minute)

    def _burst(self, limit: float) -> float:
        """Return the bucket's capacity: the server's bucket as inferred, within 1 to 10 s.

        One second's share until the server's bucket is known, and a sixth of the minute at
        most: OpenAI may hold windows shorter than its headers show. Below the server's own
        size the bucket wastes refills whenever the ledger holds a request back (it drains
        empty while the oldest entries leave, and the limit's rate is all it can catch up at):
        at one second's share the tokens bench (40,000 TPM over 10 s windows) spent 90 % of
        the limit, 92 % at the server's size.
        """
        share = limit / WINDOW
        if self._capacity is None:
            return share
        return min(max(share, self._capacity), 10 * share)

    def _until_freed(self, now: float, excess: float) -> float:
        # In stamp order, leaving at the latest ``until`` so far: ``_expire`` lets an entry
        # go only behind the ones sent before it (answers are dated a round trip apart).
        freed, until = 0.0, -math.inf
        for entry in self._sent:
            freed += entry.tokens if entry.live else 0.0
            until = max(until, entry.until)
            if freed >= excess - _SLIVER:
                return max(0.0, until - now)  # inf: an answer must come (or a settlement)
        return math.inf  # what is in flight must be sent (or settled) first

    def _expire(self, now: float) -> None:
        horizon = now + _SLIVER  # what ``_until_freed`` waited for has left
        sent = self._sent
        while sent and sent[0].until <= horizon:
            entry = sent.popleft()
            if entry.live:
                entry.live = False
                self._sent_sum -= entry.tokens
        if not sent:
            self._sent_sum = 0.0  # float drift cannot outlive an empty ledger

    def _drain(self, now: float, rate: float) -> None:
        if now > self._as_of:
            if self._level > 0.0:
                self._level = max(0.0, self._level - (now - self._as_of) * rate)
            self._as_of = now
