"""Tokens per minute through the fleet, against the simulator: both kinds, real SDK.

The invariant (no window over the limit, no token 429) runs in-process on a fake clock at
time_scale 1, where the fleet's minute is the simulator's; the rest run over real sockets with
the simulator's time scaled, where the token limit the fleet learns is per real minute.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
from structlog.testing import capture_logs

from runfleet import Fleet
from runfleet.errors import RequestTooLarge

from .helpers import StartSim, fleet_on, sdk, start
from .test_fleet_invariants import in_process

pytestmark = pytest.mark.filterwarnings(
    "ignore:The Assistants API is deprecated:DeprecationWarning"
)

KINDS = ["responses", "assistants"]
SCALE = 0.05  # a scenario minute is 3 real seconds


def account(tpm: float, *, window: float = 60.0, run: float = 2.0) -> dict[str, Any]:
    """A scenario where tokens bind: requests are plentiful, every run outputs 100 tokens."""
    return {
        "quota": {"rpm": 6000, "tpm": tpm, "window": window},
        "lifecycle": {"queued": 0.0, "in_progress": run},
        "tokens": {"output": 100, "default_max_output_tokens": 1000},
    }


def reservation(kind: str, tokens: int) -> dict[str, Any]:
    """The output reservation argument of ``kind``."""
    key = "max_output_tokens" if kind == "responses" else "max_completion_tokens"
    return {key: tokens}


@pytest.mark.looptime
@pytest.mark.parametrize("kind", KINDS)
async def test_the_fleet_keeps_every_minute_within_the_token_limit(kind: str) -> None:
    """60 runs of 1,100 tokens reserved against 12,000 a minute: no token 429, peak <= tpm."""
    async with in_process(account(12_000, window=10), rpm=6000, tpm=12_000) as (app, fleet):
        handles = [await start(fleet, kind, "x" * 400) for _ in range(60)]
        results = [await h.result() for h in handles]
    stats = app.snapshot()
    assert stats["rate_limited_by_type"]["tokens"] == 0
    assert stats["tokens"]["peak_window"]["peak"] <= 12_000
    assert {r.usage.total_tokens for r in results if r.usage} == {200}
    tokens = fleet.stats().tokens
    assert tokens.peak_window <= 12_000
    assert tokens.used == 60 * 200
    # The first eleven (sent before ten runs had ended) count the default reservation, the
    # rest the output learned (100, its p95).
    assert tokens.charged == 11 * 1_100 + 49 * 200
    assert tokens.given_back == 11 * 900  # each run's unused reservation came back


@pytest.mark.parametrize("kind", KINDS)
async def test_the_token_limit_is_learned_and_usage_settles(start_sim: StartSim, kind: str) -> None:
    async with start_sim(account(6_000), time_scale=SCALE) as sim, fleet_on(sim) as fleet:
        result = await (await start(fleet, kind, "x" * 400)).result()
        stats = fleet.stats()
    assert stats.token_limit == 6_000 / SCALE  # per real minute, from the headers
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (100, 100)
    assert stats.tokens.charged == 1_100
    assert stats.tokens.given_back == 900
    assert sim.stats()["rate_limited_by_type"]["tokens"] == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_polls_go_on_while_a_create_waits_for_tokens(start_sim: StartSim, kind: str) -> None:
    """A 6,000-token run empties the account's bucket (3 s to refill): the next 5,100-token
    create waits for its refund, which the fleet learns by polling it to its end."""
    async with (
        start_sim(account(6_000, run=8.0), time_scale=SCALE) as sim,
        fleet_on(sim, tpm=6_000 / SCALE) as fleet,
    ):
        loop = asyncio.get_running_loop()
        big = await start(fleet, kind, "x" * 400, **reservation(kind, 5_900))
        begun = loop.time()
        second = await start(fleet, kind, "x" * 400, **reservation(kind, 5_000))
        waited = loop.time() - begun
        assert big.done()  # polled to its end while the second create waited for tokens
        await second.result()
    big_result = await big.result()
    assert 0.3 < waited < 2.0  # the run took 0.4 s; its refund, not the refill, let it go
    assert big_result.figures.polls >= 1
    assert sim.stats()["rate_limited_by_type"]["tokens"] == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_too_large_for_the_limit_fails_alone(
    start_sim: StartSim, kind: str
) -> None:
    async with (
        start_sim(account(6_000), time_scale=SCALE) as sim,
        fleet_on(sim, tpm=6_000) as fleet,
    ):
        other = await start(fleet, kind, "x" * 400)
        with pytest.raises(RequestTooLarge, match="more than the whole limit of 6,000"):
            await start(fleet, kind, "x" * 400, **reservation(kind, 6_000))
        await other.result()
    assert sim.stats()["tokens"]["charged"] == 1_100  # the large one never left


@pytest.mark.parametrize("kind", KINDS)
async def test_the_servers_request_too_large_is_not_retried(start_sim: StartSim, kind: str) -> None:
    """The learned limit is per real minute (120,000); the server's own is 6,000 a request."""
    async with start_sim(account(6_000), time_scale=SCALE) as sim, fleet_on(sim) as fleet:
        await (await start(fleet, kind, "x")).result()  # learns the limit
        with pytest.raises(RequestTooLarge, match="Request too large"):
            await start(fleet, kind, "x" * 400, **reservation(kind, 7_000))
        stats = fleet.stats()
    assert sim.stats()["rate_limited_by_type"]["too_large"] == 1
    assert stats.tokens.too_large == 1
    assert stats.quota.paused_for == 0.0


def test_tpm_beside_a_shared_quota_is_refused() -> None:
    from openai import AsyncOpenAI

    from runfleet.admission.quota import RequestQuota

    with pytest.raises(ValueError, match="tpm cannot be set beside a shared quota"):
        Fleet(AsyncOpenAI(api_key="sk-x"), rpm=60, tpm=1000, quota=RequestQuota(60))


@pytest.mark.parametrize(
    "kind",  # the token half is the same for both kinds: Assistants in make soak (budget)
    ["responses", pytest.param("assistants", marks=pytest.mark.soak)],
)
async def test_a_server_without_token_headers_is_run_on_requests_alone(
    start_sim: StartSim, kind: str
) -> None:
    """No token headers and no ``tpm``: the first answer ends the one-at-a-time start, said once.

    Every answer takes 2 s of the simulator's: one at a time, its 16 creates would arrive one
    every 2 s (at most 2 requests in any of its seconds, measured so); here the first goes
    alone and the others together, however many tokens they reserve (14 in one second).
    """
    scenario = {
        "quota": {"rpm": 6000, "token_headers": False},
        "lifecycle": {"queued": 0.0, "in_progress": 2.0},
        "faults": {"slow": 1.0, "slow_delay": 2.0},
    }
    with capture_logs() as logs:
        async with start_sim(scenario, time_scale=0.15) as sim, fleet_on(sim) as fleet:
            starts = [start(fleet, kind, "x" * 400, **reservation(kind, 50_000)) for _ in range(16)]
            for handle in await asyncio.gather(*starts):
                await handle.result()
            tokens = fleet.stats().tokens
    per_second = sim.stats(timeline=True)["timeline"]["requests"]
    assert max(map(sum, itertools.pairwise(per_second))) >= 10
    assert (tokens.limit, tokens.server_limit, tokens.rate_limited) == (None, None, 0)
    assert tokens.used == sim.stats()["tokens"]["used"] > 0  # still counted from usage
    assert [e["event"] for e in logs].count("tokens_not_limited") == 1


@pytest.mark.looptime
async def test_a_charging_rule_the_fleet_does_not_know_is_learned_and_the_limit_held() -> None:
    """The server counts bytes / 3.6, the fleet characters / 4: 11 % short on every input.

    120 prompts of 50 to 2,000 tokens against 20,000 a minute, the limit learned from headers:
    the ratio is learned, the busiest minute stays within 5 % of the limit (19,956 here), and
    the server refuses a handful of requests at most (none here; Assistants runs alike).
    """
    kind = "responses"
    rng = random.Random(7)
    prompts = ["x" * rng.randint(200, 8_000) for _ in range(120)]
    scenario = account(20_000, window=10)
    scenario["tokens"] |= {"estimate": "bytes/3.6"}
    async with in_process(scenario, rpm=6000) as (app, fleet):
        handles = [await start(fleet, kind, prompt) for prompt in prompts]
        for handle in handles:
            await handle.result()
        ratio = fleet.stats().tokens.ratios
    stats = app.snapshot()
    assert list(ratio.values()) == [pytest.approx(4 / 3.6, rel=0.02)]
    assert stats["tokens"]["peak_window"]["peak"] <= 1.05 * 20_000
    assert stats["rate_limited_by_type"]["tokens"] <= 3
    assert stats["now"] > 4 * 60  # the limit set the pace: 233,000 tokens at 20,000 a minute


async def test_an_image_part_is_not_counted_only_the_text_beside_it(start_sim: StartSim) -> None:
    """Images and files cost what their details say, which the fleet does not read: the text
    is counted, and the learned ratio absorbs the rest."""
    image = {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 40_000}
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "x" * 400}, image]}]
    async with start_sim(account(6_000), time_scale=SCALE) as sim, fleet_on(sim) as fleet:
        result = await fleet.respond(model="gpt-5-mini", input=parts)
        charged = fleet.stats().tokens.charged
    assert charged == 100 + 1_000  # 400 characters and the default reservation; no image
    assert result.usage is not None
    assert sim.stats()["rate_limited_by_type"]["tokens"] == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_a_token_429_pauses_the_next_create_and_polls_go_on(
    start_sim: StartSim, kind: str
) -> None:
    """Another client drains the account between two answers: the fleet's create meets a
    token 429 (a second to wait); during that pause its running run is polled to its end."""
    async with (
        start_sim(account(60_000, run=0.4), time_scale=1.0) as sim,
        fleet_on(sim) as fleet,
        sdk(sim, max_retries=3) as other,  # waits for a full bucket, as the SDK does
    ):
        running = await start(fleet, kind, "x" * 400)  # 1,100 of the 60,000 in the bucket
        await other.responses.create(
            model="gpt-5-mini", input="x", background=True, max_output_tokens=59_900
        )  # under 1,000 tokens are left (with the first run's refund), and the fleet has not
        # heard of it yet
        paused = await start(fleet, kind, "x" * 400)
        polled = running.done()
        await paused.result()
        stats = fleet.stats()
    assert polled  # polled to its end while the second create waited out the token pause
    assert sim.stats()["rate_limited_by_type"]["requests"] == 0
    assert stats.tokens.rate_limited == 1  # the fleet's own (the other client waited too)
    assert stats.quota.paused_for == 0.0  # the requests quota was never paused


@pytest.mark.looptime
async def test_the_wait_for_tokens_is_not_learned_as_run_time() -> None:
    """40 runs of 2 s, each create waiting about 9 s for tokens: polled near their end.

    Learned from submission, runs would seem to take 11 s, and be first polled ~9 s late.
    """
    async with in_process(account(12_000, window=10), rpm=6000) as (_, fleet):
        handles = [await start(fleet, "responses", "x" * 3_600) for _ in range(40)]
        for handle in handles:
            await handle.result()
        stats = fleet.stats()
    assert stats.detection_p95 is not None
    assert stats.detection_p95 < 2.0
    assert stats.tokens.rate_limited == 0
    assert stats.tokens.peak_window <= 12_000
