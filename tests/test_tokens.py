"""TokenBudget with literal clock values: the 60 s invariant, the spread, settlement, headers."""

from __future__ import annotations

import heapq
import itertools
import math
import random

import pytest

from runfleet.admission.headers import RateLimitHeaders
from runfleet.admission.tokens import TokenBudget, TokenEntry


def admit(budget: TokenBudget, now: float, tokens: float) -> TokenEntry:
    """Reserve and send at ``now``; the budget must have room."""
    assert budget.wait_for(now, tokens) == 0.0
    entry = budget.take(now, tokens)
    budget.sent(entry, now)
    return entry


def most_in_window(sent: list[tuple[float, float]], window: float = 60.0) -> float:
    """The most tokens whose stamps fall in any half-open window of ``window`` seconds."""
    best = 0.0
    for start, _ in sent:
        best = max(best, sum(t for at, t in sent if start <= at < start + window))
    return best


def test_tokens_in_any_minute_never_exceed_the_limit_whatever_the_sizes() -> None:
    """Invariant 1 for tokens: random sizes up to the limit, sent as soon as allowed."""
    rng = random.Random(3)
    budget = TokenBudget(10_000)
    now, sent = 0.0, []
    while now < 600:
        tokens = rng.choice([50, 400, 1_000, 3_000, 9_000])
        wait = budget.wait_for(now, tokens)
        now += wait if math.isfinite(wait) else 1.0
        if budget.wait_for(now, tokens) == 0.0:
            admit(budget, now, tokens)
            sent.append((now, float(tokens)))
    assert most_in_window(sent) <= 10_000
    assert sum(t for _, t in sent) > 0.8 * 10_000 * 10  # spent, not wasted (84.7 % here)


def test_the_bucket_spreads_a_minute_instead_of_letting_it_out_at_once() -> None:
    budget = TokenBudget(6_000)  # 100 tokens a second
    admit(budget, 0.0, 100)
    assert budget.wait_for(0.0, 100) == pytest.approx(1.0)
    # A request bigger than a second's share waits for an empty bucket, then leaves it in debt.
    assert budget.wait_for(1.0, 500) == 0.0
    admit(budget, 1.0, 500)
    assert budget.wait_for(1.0, 100) == pytest.approx(5.0)


def test_an_entry_counts_in_full_until_it_is_sent_and_then_for_60_s() -> None:
    """And a quarter second more: one sent later may reach the server sooner (its arrivals)."""
    budget = TokenBudget(600)
    entry = budget.take(0.0, 600)
    assert budget.wait_for(100.0, 10) == math.inf  # only its departure can change anything
    budget.sent(entry, 100.0)
    assert budget.wait_for(100.0, 10) == pytest.approx(60.25)
    assert budget.wait_for(160.25, 10) == 0.0


def test_an_answered_entry_counts_a_minute_from_its_answer_a_dropped_one_longer() -> None:
    """The server admitted it before it answered: a minute from the answer covers it."""
    budget = TokenBudget(600)
    answered, dropped = budget.take(0.0, 300), budget.take(0.0, 300)
    budget.sent(answered, 0.0)
    budget.sent(dropped, 0.0)
    budget.answered(answered, 0.5)
    budget.answered(dropped, 2.0, heard=False)  # the server may still admit it
    assert budget.wait_for(2.0, 300) == pytest.approx(60.501 - 2.0)  # and a millisecond
    assert budget.wait_for(60.501, 300) == 0.0
    assert budget.wait_for(60.501, 600) == pytest.approx(62.25 - 60.501)


def test_the_bucket_bursts_as_far_as_the_servers_bucket_once_its_size_is_known() -> None:
    """Up to ten seconds' share: a server may enforce shorter windows than its headers show."""
    budget = TokenBudget(60_000)  # 1,000 tokens a second
    budget.answered(admit(budget, 0.0, 1_000), 0.0)
    assert budget.wait_for(0.0, 1_000) == pytest.approx(1.0)  # one second's share
    # A bucket of 5,000 (half full, 2.5 s to refill), then full: 5,000 may go at once.
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=30_000, reset=2.5))
    budget.answered(admit(budget, 10.0, 1_000), 10.0)
    budget.learn(10.0, RateLimitHeaders(limit=60_000, remaining=60_000, reset=0.0))
    assert budget.wait_for(10.0, 4_000) == 0.0
    assert budget.wait_for(10.0, 4_001) == pytest.approx(0.001)
    # A server whose headers tell a minute's bucket: ten seconds' share at most.
    whole = TokenBudget(60_000)
    whole.learn(0.0, RateLimitHeaders(limit=60_000, remaining=0, reset=60.0))
    whole.learn(60.0, RateLimitHeaders(limit=60_000, remaining=60_000, reset=0.0))
    admit(whole, 60.0, 9_000)
    assert whole.wait_for(60.0, 2_000) == pytest.approx(1.0)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_a_backlog_of_realistic_prompts_spends_over_92_percent_of_the_limit(scale: float) -> None:
    """50-4,000 tokens of input, the output counted at its p95 until usage settles 4-8 s later.

    The server (as in the ``tokens`` scenario, at time scale ``scale``): 40,000 TPM over 10 s
    windows, each request charged its input and 1,000 reserved, the unused output given back
    at its end; its answer 0.05 s after departure tells what remains. Over 92 % of the limit
    really used over 15 minutes (93.2 %, both scales; its busiest minute 39,957), no 429.
    Entries counted from their departure plus 0.25 s and a one-second bucket: 91.2 % at
    scale 1 (and a minute of 40,079), 88.5 % at 0.1 (a quarter second is 2.5 s of the
    account's minute there). Room in the ledger for the estimate alone: 93.1 %.
    """
    rng = random.Random(1)
    rate = 40_000 / 60 / scale  # tokens a second of the clock
    budget = TokenBudget(None, minute=60 * scale)
    capacity, level, at = 40_000 / 6, 40_000 / 6, 0.0  # the server's bucket
    seq = itertools.count()
    due: list[tuple[float, int, TokenEntry, float, float]] = []  # at, seq, entry, usage, refund
    now, used, spent = 0.0, 0.0, []

    def server(t: float, change: float = 0.0) -> RateLimitHeaders:
        nonlocal level, at
        level, at = min(capacity, level + (t - at) * rate) + change, t
        remaining = 40_000 / scale * level / capacity  # headers count per minute of clock
        return RateLimitHeaders(
            limit=40_000 / scale, remaining=remaining, reset=(capacity - level) / rate
        )

    budget.learn(0.0, server(0.0))
    while now < 900 * scale:
        inp = rng.uniform(50, 4_000)
        # Room on the server's count for the largest input and the reservation (its p99),
        # and in the ledger for all this request can use (its input and the reservation).
        while (wait := budget.wait_for(now, inp + 804, 5_000, inp + 1_000)) > 0.0:
            now = min(now + wait, due[0][0]) if due else now + wait
            while due and due[0][0] <= now:
                when, _, entry, usage, refund = heapq.heappop(due)
                if refund < 0:  # the answer
                    budget.answered(entry, when)
                    budget.learn(when, server(when))
                else:
                    server(when, refund)
                    budget.settle(entry, usage, when)
        entry = admit(budget, now, inp + 804)
        output = min(1_000.0, rng.lognormvariate(math.log(300), 0.6))
        server(now, -(inp + 1_000))
        assert level >= 0  # the server admitted it: no 429
        heapq.heappush(due, (now + 0.05 * scale, next(seq), entry, 0.0, -1.0))
        ends = now + rng.uniform(4, 8) * scale
        heapq.heappush(due, (ends, next(seq), entry, inp + output, 1_000 - output))
        spent.append((now / scale, inp + output))
        used += inp + output
    assert most_in_window(spent) <= 40_000
    assert used / (40_000 * now / scale / 60) > 0.92, used / (40_000 * now / scale / 60)


def test_a_scaled_minute_holds_the_limit_per_minute_of_the_simulation() -> None:
    """At time scale 0.1 the account's minute lasts 6 s; headers count per minute of clock."""
    budget = TokenBudget(None, minute=6.0, delay_allowance=0.0)
    budget.learn(0.0, RateLimitHeaders(limit=400_000, remaining=400_000, reset=0.0))
    assert budget.limit == 40_000
    admit(budget, 0.0, 40_000)
    assert budget.wait_for(0.0, 100) == pytest.approx(6.0)  # the ledger: one scaled minute


def test_settlement_gives_back_what_usage_did_not_use() -> None:
    budget = TokenBudget(6_000)
    entry = admit(budget, 0.0, 5_000)
    assert budget.held(0.0) == 5_000
    assert budget.settle(entry, 1_200, 2.0) == 3_800
    assert budget.held(2.0) == 1_200
    # The bucket got the difference back too: 1,000 left to drain at 100/s, not 4,800.
    assert budget.wait_for(2.0, 4_000) == pytest.approx(10.0)


def test_usage_above_the_estimate_is_taken_from_the_budget() -> None:
    budget = TokenBudget(6_000)
    entry = admit(budget, 0.0, 1_000)
    assert budget.settle(entry, 1_500, 1.0) == -500
    assert budget.held(1.0) == 1_500


def test_a_released_request_holds_nothing_and_a_late_settlement_only_drains() -> None:
    budget = TokenBudget(6_000)
    refused = budget.take(0.0, 2_000)
    budget.release(refused, 0.0)
    assert budget.held(0.0) == 0.0
    old = admit(budget, 0.0, 1_000)
    assert budget.held(61.0) == 0.0
    budget.settle(old, 10, 61.0)  # expired already: the ledger is untouched
    assert budget.held(61.0) == 0.0


def test_a_token_429_pauses_for_its_retry_after() -> None:
    budget = TokenBudget(60_000)
    budget.on_rate_limited(5.0, 2.5)
    assert budget.wait_for(5.0, 10) == 2.5
    budget.on_rate_limited(6.0, None)  # no retry-after: the default pause, never shorter
    assert budget.wait_for(7.0, 10) == 0.5
    assert budget.rate_limited == 2


def test_the_server_limit_is_learned_and_the_lower_one_wins() -> None:
    budget = TokenBudget(None)
    assert budget.limit is None
    assert budget.wait_for(0.0, 10**9) == 0.0  # no limit known: only counted
    budget.learn(0.0, RateLimitHeaders(limit=30_000))
    assert budget.limit == 30_000
    capped = TokenBudget(20_000)
    capped.learn(0.0, RateLimitHeaders(limit=30_000))
    assert capped.limit == 20_000


def test_the_servers_remaining_count_is_believed_over_the_fleets() -> None:
    """Another process spent the account: the fleet's own ledger is empty, the server's not."""
    budget = TokenBudget(60_000)
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=500, reset=59.5))
    # 59,500 tokens refill in 59.5 s: 1,000 a second; 1,000 more than remains takes 1 s, and
    # the margin for the headers' rounding (0.2 % of the bucket and a token) 0.121 s more.
    assert budget.wait_for(0.0, 1_500) == pytest.approx(1.121)
    assert budget.wait_for(1.121, 1_500) == 0.0
    admit(budget, 1.121, 1_500)
    # The server's count holds its margin only now: 1 s to refill 1,000. The fleet's own
    # bucket, as large as the server's now (ten seconds' share), holds nothing back.
    assert budget.wait_for(1.121, 1_000) == pytest.approx(1.0)


@pytest.mark.parametrize("tpm", [None, 1e9])
def test_the_ledger_holds_the_last_minute_of_requests_however_many_were_sent(
    tpm: float | None,
) -> None:
    """Limited or not, entries older than 60 s leave the ledger as new ones are taken."""
    budget = TokenBudget(tpm)
    for i in range(30_000):  # 10 a second for 3,000 s; every tenth given back unused
        entry = admit(budget, i / 10, 100.0)
        if i % 10 == 0:
            budget.release(entry, i / 10)
    assert len(budget._sent) <= 60.25 * 10 + 1
    assert budget.held(3_000.0) == pytest.approx(601 * 100.0 * 0.9, rel=0.01)


def test_remaining_is_read_as_a_share_of_a_bucket_whose_size_the_reset_tells() -> None:
    """A 60,000 TPM account enforced over 10 s: a 10,000-token bucket, half full.

    Its headers say 30,000 remain (half the limit) and 5 s to refill (5,000 at 1,000 a
    second): 5,000 tokens really remain, and the fleet waits for them, not for 30,000.
    """
    budget = TokenBudget(60_000)
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=30_000, reset=5.0))
    assert budget.wait_for(0.0, 6_000) == pytest.approx(1.021)  # and the rounding margin
    # A full bucket's headers say nothing of its size: the size learned before still holds.
    budget.learn(2.0, RateLimitHeaders(limit=60_000, remaining=60_000, reset=0.0))
    assert budget.wait_for(2.0, 10_000) == 0.0
    assert budget.wait_for(2.0, 20_000) == 0.0  # larger than the bucket: it goes when full


def test_an_answer_does_not_count_requests_it_came_back_before() -> None:
    """Tokens admitted since are taken from the server's count until their own answer."""
    budget = TokenBudget(60_000)
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=30_000, reset=5.0))
    entry = budget.take(0.0, 4_000)
    budget.sent(entry, 0.0)
    # An answer to an earlier request, with the same count: 5,000 - 4,000 remain for us.
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=30_000, reset=5.0))
    assert budget.server_available(0.0) == 1_000
    budget.answered(entry, 0.0)  # its own answer counts it from here
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=6_000, reset=9.0))
    assert budget.server_available(0.0) == pytest.approx(1_000)


def test_a_request_waits_for_its_headroom_and_counts_only_its_estimate() -> None:
    """The server's bucket holds 1,000 of 10,000: room for 300 now, for 2,000 in a second."""
    budget = TokenBudget(60_000)
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=6_000, reset=9.0))
    assert budget.wait_for(0.0, 300) == 0.0
    assert budget.wait_for(0.0, 300, headroom=2_000) == pytest.approx(1.021)  # with the margin
    entry = budget.take(1.0, 300)
    assert entry.tokens == 300
    assert budget.server_available(1.0) == pytest.approx(1_700)


def test_the_newest_request_finds_room_in_the_ledger_for_its_bound() -> None:
    """Counted at its estimate, a request that used its whole reservation would carry a full
    minute over; it waits until the minute has room for all it can use, and counts only its
    estimate once admitted."""
    budget = TokenBudget(40_000, delay_allowance=0.0)
    first = admit(budget, 0.0, 39_000)
    budget.answered(first, 0.0)
    later = 59.0  # the bucket has drained; the ledger holds the minute until 60 s
    assert budget.wait_for(later, 900) == 0.0  # the estimate alone fits: 39,900
    assert budget.wait_for(later, 900, bound=1_100) == pytest.approx(1.0 + 1e-3)
    assert budget.wait_for(60.01, 900, bound=1_100) == 0.0  # the first request has left
    entry = budget.take(60.01, 900)
    assert entry.tokens == 900


def test_an_answer_read_late_does_not_forget_a_request_answered_meanwhile() -> None:
    """A poll leaves, a create leaves and is answered, then the poll's older count arrives.

    The server counted the poll before the create: its count lacks the create's 4,000, although
    the create is answered already. Marked at the poll's departure, the count is taken as it.
    """
    budget = TokenBudget(60_000)
    budget.learn(0.0, RateLimitHeaders(limit=60_000, remaining=30_000, reset=5.0))
    poll = budget.mark()
    create = budget.take(0.0, 4_000)
    budget.sent(create, 0.0)
    create_left = budget.mark()
    own = budget.answered(create, 0.0)
    assert (own, budget.answered(create, 0.0)) == (4_000, 0.0)
    # The create's own answer counts it: its ``since`` leaves itself out.
    after = RateLimitHeaders(limit=60_000, remaining=6_000, reset=9.0)
    budget.learn(0.0, after, since=create_left + own)
    assert budget.server_available(0.0) == pytest.approx(1_000)
    stale = RateLimitHeaders(limit=60_000, remaining=30_000, reset=5.0)  # before the create
    budget.learn(0.0, stale, since=poll)
    assert budget.server_available(0.0) == pytest.approx(1_000)
    budget.learn(0.0, stale)  # unmarked, as before: 4,000 too many
    assert budget.server_available(0.0) == pytest.approx(5_000)
