"""TokenQuota and the quota's token half on a fake loop clock: polls never wait for tokens.

Under looptime simulated minutes take milliseconds; tests synchronise on the quota's state.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from runfleet.admission.estimates import TokenCost, TokenEstimates, count_tokens
from runfleet.admission.quota import Priority, RequestQuota
from runfleet.admission.token_quota import TokenQuota
from runfleet.errors import RequestTooLarge, RunRejected

from .test_quota import until


def cost(chars: int, output: int | None = 0, model: str = "m") -> TokenCost:
    """A request of ``chars`` characters (chars / 4 tokens) reserving ``output``."""
    return TokenCost(model, ("x" * chars,), output)


def test_the_character_rule_is_a_quarter_token_a_character_rounded_up() -> None:
    assert count_tokens(["abcd", "e"]) == 2
    assert count_tokens([]) == 0


@pytest.mark.parametrize("tpm", [0, -5, float("inf"), float("nan"), "1000", True])
def test_a_tpm_that_is_not_a_positive_number_is_refused_in_one_line(tpm: object) -> None:
    with pytest.raises(ValueError, match=r"^tpm must be a positive number") as info:
        RequestQuota(600, tpm=tpm)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_estimates_add_the_default_reservation_and_learn_each_models_error() -> None:
    estimates = TokenEstimates(default_output=1000)
    spec = cost(400, output=None)
    assert estimates.charge(spec, estimates.raw_input(spec)) == 100 + 1000
    estimates.learn("m", 100, 150)  # the server counts 1.5 times what the rule said
    assert estimates.charge(spec, 100) == 150 + 1000
    assert estimates.charge(cost(400, output=16, model="other"), 100) == 116


def test_the_ratio_weighs_each_run_by_its_size_not_each_lesson_alike() -> None:
    """Inputs that do not follow the text: 2,000 tokens whether the prompt counts 10 or 100."""
    estimates = TokenEstimates(weight=0.5)
    estimates.learn("m", 10, 2_000)
    estimates.learn("m", 100, 2_000)
    # A mean of ratios (200 and 20) would say 65 and charge 6,500 for the long one.
    assert estimates.ratios["m"] == pytest.approx((1_000 + 2_000) / (5 + 100))


def test_headroom_is_a_high_quantile_of_real_inputs_once_some_are_known() -> None:
    estimates = TokenEstimates(default_output=1000, quantile=0.99)
    spec = cost(40, output=None)  # 10 tokens by the rule
    assert estimates.headroom(spec, 10) == estimates.charge(spec, 10)  # nothing learned yet
    for real in range(100, 4_100, 100):  # 40 runs of 10 counted tokens, 100 to 4,000 real
        estimates.learn("m", 10, real)
    # Counted at the expected input, admitted only with room for nearly the largest seen.
    assert estimates.headroom(spec, 10) == 4_000 + 1000
    assert estimates.charge(spec, 10) < 4_000 + 1000
    # A request expected above every input seen asks for its own estimate.
    assert estimates.headroom(cost(4_000, output=None), 1_000) == estimates.charge(
        cost(4_000, output=None), 1_000
    )


def test_without_max_output_tokens_the_output_counted_is_the_p95_of_real_outputs() -> None:
    """The default until ten outputs are known; the room waited for keeps the default."""
    estimates = TokenEstimates(default_output=1000)
    spec = cost(400, output=None)  # 100 tokens by the rule
    for out in range(1, 10):
        estimates.learn("m", 100, 100, out * 20)
    assert estimates.charge(spec, 100) == 100 + 1000  # nine outputs: too few to mean anything
    for out in range(10, 21):  # twenty outputs: 20, 40, ... 400
        estimates.learn("m", 100, 100, out * 20)
    assert estimates.charge(spec, 100) == 100 + 380  # the p95 (upper rank) of those seen
    assert estimates.headroom(spec, 100) == 100 + 1000  # what a server reserves for it
    assert estimates.charge(cost(400, output=50), 100) == 150  # its own reservation
    assert estimates.charge(cost(400, output=None, model="other"), 100) == 1100  # per model
    for _ in range(20):  # outputs above the default: counted and waited for in full
        estimates.learn("m", 100, 100, 3_000)
    assert estimates.charge(spec, 100) == estimates.headroom(spec, 100) == 100 + 3_000


def test_the_bound_is_the_input_and_the_output_a_server_reserves() -> None:
    """Counted at the p95 of outputs, a request may use up to its reservation: the bound."""
    estimates = TokenEstimates(default_output=1000)
    spec = cost(400, output=None)  # 100 tokens by the rule
    assert estimates.bound(spec, 100) == estimates.charge(spec, 100) == 1100  # nothing learned
    for out in range(1, 21):  # twenty outputs: 20, 40, ... 400
        estimates.learn("m", 100, 100, out * 20)
    assert estimates.charge(spec, 100) == 100 + 380
    assert estimates.bound(spec, 100) == 100 + 1000
    assert estimates.bound(cost(400, output=50), 100) == 150  # its own reservation is its bound


async def test_only_runs_without_max_output_tokens_teach_the_output() -> None:
    quota = TokenQuota(600_000)
    for output, reserved in ((40, 50), (300, None)):
        for _ in range(10):
            held = await quota.reserve(cost(400, output=reserved))
            held.sent()
            quota.settle([held], 100, output)
    assert quota.estimates.output(cost(400, output=None)) == 300  # the capped 40s taught none


@pytest.mark.looptime
async def test_polls_are_not_delayed_while_creates_wait_for_tokens() -> None:
    quota = RequestQuota(6000, tpm=6_000)  # 100 tokens a second
    loop = asyncio.get_running_loop()
    first = await quota.tokens.reserve(cost(20_000))  # 5,000 tokens: 50 s of bucket
    first.sent()
    waiter = asyncio.create_task(quota.tokens.reserve(cost(400)))
    await until(lambda: quota.tokens.stats().waiting == 1)
    for _ in range(20):
        await quota.acquire(Priority.POLL)
    assert loop.time() < 1.0  # twenty polls at 100 a second, none behind the create
    assert not waiter.done()
    (await waiter).sent()
    assert loop.time() == pytest.approx(50.0, abs=0.1)


@pytest.mark.looptime
async def test_a_token_429_pauses_creates_and_not_polls() -> None:
    quota = RequestQuota(600, tpm=60_000)
    loop = asyncio.get_running_loop()
    quota.observe({"retry-after-ms": "4000"}, status=429, limit="tokens")
    await quota.acquire(Priority.POLL)
    assert loop.time() == 0.0
    assert quota.stats().paused_for == 0.0
    await quota.tokens.reserve(cost(40))
    assert loop.time() == pytest.approx(4.0)
    assert quota.tokens.stats().rate_limited == 1


@pytest.mark.looptime
async def test_a_requests_429_pauses_polls_as_before() -> None:
    quota = RequestQuota(600, tpm=60_000)
    loop = asyncio.get_running_loop()
    quota.observe({"retry-after-ms": "3000"}, status=429, limit="requests")
    await quota.acquire(Priority.POLL)
    assert loop.time() >= 3.0  # then one drain step at the lowered rate


@pytest.mark.looptime
async def test_a_request_larger_than_the_limit_fails_alone_at_once() -> None:
    quota = TokenQuota(5_000)
    loop = asyncio.get_running_loop()
    held = await quota.reserve(cost(16_000))  # 4,000 of 5,000: the next big one must wait
    held.sent()
    small = asyncio.create_task(quota.reserve(cost(4_000)))
    await until(lambda: quota.stats().waiting == 1)
    with pytest.raises(RequestTooLarge, match="more than the whole limit of 5,000") as info:
        await quota.reserve(cost(20_004))
    assert isinstance(info.value, RunRejected)
    assert info.value.outcome == "too_large"
    assert loop.time() == 0.0
    await small
    assert quota.stats().too_large == 1


@pytest.mark.looptime
async def test_a_waiter_that_a_learned_limit_makes_too_large_fails_without_blocking_others() -> (
    None
):
    quota = TokenQuota()
    first = await quota.reserve(cost(40_000))  # no limit yet: only counted
    first.sent()
    quota.observe({"x-ratelimit-limit-tokens": "12000"})  # 10,000 held: the rest must wait
    big = asyncio.create_task(quota.reserve(cost(60_000)))
    await until(big.done)
    with pytest.raises(RequestTooLarge):
        big.result()
    await quota.reserve(cost(4))  # the queue moved on


@pytest.mark.looptime
async def test_settling_a_run_gives_tokens_back_and_wakes_the_waiter() -> None:
    quota = TokenQuota(60_000)  # 1,000 tokens a second
    loop = asyncio.get_running_loop()
    held = await quota.reserve(cost(4_000, output=20_000))  # 21,000: 21 s of bucket
    held.sent()
    waiter = asyncio.create_task(quota.reserve(cost(4_000)))
    await until(lambda: quota.stats().waiting == 1)
    await asyncio.sleep(1.0)
    quota.settle([held], 1_000, 500)  # used 1,500 of 21,000
    await waiter
    assert loop.time() == pytest.approx(1.5)  # 500 left to drain, not 20,000
    stats = quota.stats()
    assert (stats.charged, stats.used, stats.given_back) == (22_000, 1_500, 19_500)
    assert stats.ratios == {"m": 1.0}


def test_the_learned_ratios_keep_at_most_max_models_the_least_recently_learned_forgotten() -> None:
    estimates = TokenEstimates(max_models=100)
    estimates.learn("first", 100, 200)
    for i in range(5_000):  # e.g. an assistant id per run, where runs name no model
        estimates.learn(f"asst_{i}", 100, 150)
        estimates.learn("first", 100, 200)  # learned again and again: never the oldest
    assert len(estimates.ratios) == 100
    assert estimates.ratios["first"] == pytest.approx(2.0)
    assert "asst_4999" in estimates.ratios
    assert "asst_0" not in estimates.ratios  # forgotten: its estimates start again from 1.0
    assert estimates.charge(cost(400, model="asst_0"), 100) == 100


def test_max_models_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_models"):
        TokenEstimates(max_models=0)


@pytest.mark.looptime
async def test_a_request_queued_before_the_first_lesson_is_priced_by_it() -> None:
    """A batch queues its whole file at once: what the first run taught prices the rest."""
    quota = TokenQuota(60_000)  # 1,000 tokens a second
    first = await quota.reserve(cost(4_000))  # 1,000 by the rule: the bucket is full
    first.sent()
    queued = asyncio.create_task(quota.reserve(cost(400)))  # 100 by the rule, as it arrives
    await until(lambda: quota.stats().waiting == 1)
    quota.settle([first], 3_000, 0)  # the server counted 3 times what the rule said
    assert (await queued).charged == 300


@pytest.mark.looptime
async def test_a_server_without_token_headers_is_run_on_requests_alone_said_once() -> None:
    quota = RequestQuota(600)
    only_requests = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599"}
    with capture_logs() as logs:
        for _ in range(5):
            quota.observe(only_requests, status=200)
            await quota.tokens.reserve(cost(4_000_000))  # nothing to wait for
    told = [e for e in logs if e["event"] == "tokens_not_limited"]
    assert len(told) == 1
    assert told[0]["log_level"] == "info"
    assert quota.tokens.stats().limit is None
    assert asyncio.get_running_loop().time() == 0.0


async def test_an_answer_without_token_headers_after_a_limit_is_known_changes_nothing() -> None:
    quota = RequestQuota(600)
    quota.observe({"x-ratelimit-limit-tokens": "30000"}, status=200)
    with capture_logs() as logs:
        quota.observe({}, status=502)
    assert [e for e in logs if e["event"] == "tokens_not_limited"] == []
    assert quota.tokens.stats().limit == 30_000


@pytest.mark.looptime
@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "59000"},
        {},  # no token headers: nothing is limited
    ],
)
async def test_until_an_answer_tells_whether_tokens_are_limited_one_request_goes_at_a_time(
    headers: dict[str, str],
) -> None:
    """No burst into a limit learned too late: the others wait for the first answer."""
    quota = TokenQuota()
    loop = asyncio.get_running_loop()
    first = await quota.reserve(cost(400))
    first.sent()
    others = [asyncio.create_task(quota.reserve(cost(400))) for _ in range(3)]
    await asyncio.sleep(30)
    assert not any(task.done() for task in others)
    first.answered()
    quota.observe(headers)
    for task in others:
        await task
    assert loop.time() == pytest.approx(30.0)


@pytest.mark.looptime
async def test_a_first_request_that_never_answers_does_not_hold_the_others() -> None:
    quota = TokenQuota()
    first = await quota.reserve(cost(400))
    first.sent()
    waiting = asyncio.create_task(quota.reserve(cost(400)))
    await asyncio.sleep(1)
    first.answered(heard=False)  # dropped: over without an answer, as the gate says
    await waiting
    assert asyncio.get_running_loop().time() == pytest.approx(1.0)


def test_a_token_quota_built_apart_replaces_tpm_and_refuses_one_beside_it() -> None:
    tokens = TokenQuota(minute=6.0)  # a simulator at time scale 0.1
    assert RequestQuota(600, tokens=tokens).tokens is tokens
    with pytest.raises(ValueError, match=r"^tpm cannot be set beside a token quota"):
        RequestQuota(600, tpm=1000, tokens=tokens)
    with pytest.raises(ValueError, match=r"^minute must be a positive number"):
        TokenQuota(minute=0)
