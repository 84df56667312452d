"""A server that enforces a per-second share: the cap, what shows it, and the fleet against it.

The pure parts take ``now``; the fleet runs against the simulator in-process on a fake clock
(looptime), whose ``enforce: "log"`` quota refuses the 11th request in any second at 600 RPM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from structlog.testing import capture_logs

from runfleet import Fleet, Priority
from runfleet.admission.headers import RateLimitHeaders, parse_rate_limit_headers
from runfleet.admission.quota import RequestQuota
from runfleet.admission.window_cap import WindowCap, sub_minute_window
from runfleet.sim import SimApp

from .helpers import API_KEY


def test_the_cap_admits_count_in_any_window_plus_delay() -> None:
    cap = WindowCap(10, 1.0, delay=0.25)
    for i in range(10):
        assert cap.wait(i * 0.01) == 0.0
        cap.take(i * 0.01)
    assert cap.wait(0.5) == pytest.approx(0.75)  # the first, at 0.0, leaves at 1.25
    assert cap.wait(1.25) == 0.0
    cap.take(1.25)
    assert cap.wait(1.25) == pytest.approx(0.01)


def test_the_spread_allowed_for_is_the_longest_recent_round_trip() -> None:
    cap = WindowCap(10, 1.0, delay=0.25)
    cap.observe_trip(0.0, 0.02)
    assert cap.span == 1.25  # quiet: the setting's quarter second
    cap.observe_trip(1.0, 0.6)
    cap.observe_trip(2.0, 0.1)
    assert cap.span == pytest.approx(1.6)  # a stall: as long as it, for 10 s
    cap.observe_trip(11.5, 0.05)
    assert cap.span == 1.25
    cap.observe_trip(12.0, 5.0)
    assert cap.span == 2.0  # at most the window again


def test_a_fractional_share_rounds_down_and_bad_values_are_refused() -> None:
    assert WindowCap(10.9).count == 10
    with pytest.raises(ValueError, match="per_second must be a number of requests of at least 1"):
        WindowCap(0.5)
    with pytest.raises(ValueError, match=r"per-second window must be in \(0, 60\]"):
        WindowCap(10, 0.0)


@pytest.mark.parametrize(
    ("headers", "window"),
    [
        # A bucket refilled over a second: 5 of 600 used, full again in 0.5 s -> 1 s.
        ({"limit": 600, "remaining": 300, "reset": 0.5}, 1.0),
        # A tenth of a second (a simulator at time scale 0.1).
        ({"limit": 6000, "remaining": 3000, "reset": 0.05}, pytest.approx(0.1)),
        # A minute's bucket: 5 of 600 used refill in 0.5 s -> no sub-minute window.
        ({"limit": 600, "remaining": 595, "reset": 0.5}, None),
        # Rounding: 1.01 used shows as 2 (remaining floored); still read as a minute.
        ({"limit": 600, "remaining": 598, "reset": 0.101}, None),
        # Too few used to tell.
        ({"limit": 600, "remaining": 599, "reset": 0.001}, None),
        ({"limit": 600, "remaining": None, "reset": 0.5}, None),
    ],
)
def test_the_reset_header_shows_a_sub_minute_window(
    headers: dict[str, Any], window: float | None
) -> None:
    assert sub_minute_window(RateLimitHeaders(**headers)) == window


def test_a_429_message_that_says_per_second_shows_it() -> None:
    said = "Rate limit reached for m on requests per second (RPS): Limit 10, Used 10"
    assert sub_minute_window(RateLimitHeaders(), said) == 1.0
    minute = "Rate limit reached for m on requests per min (RPM): Limit 600, Used 600"
    assert sub_minute_window(RateLimitHeaders(), minute) is None


def test_go_durations_from_the_simulator_read_as_a_second() -> None:
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "540",
        "x-ratelimit-reset-requests": "100ms",
    }
    assert sub_minute_window(parse_rate_limit_headers(headers)) == pytest.approx(1.0)


RUNS = {
    "lifecycle": {
        "queued": {"dist": "lognormal", "median": 0.5, "sigma": 0.5},
        "in_progress": {"dist": "lognormal", "median": 8, "sigma": 0.5},
    },
    "quota": {"rpm": 600, "window": 1, "enforce": "log"},
}


@asynccontextmanager
async def in_process(**fleet: Any) -> AsyncIterator[tuple[SimApp, Fleet]]:
    app = SimApp({"seed": 5, **RUNS})
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    async with client, Fleet(client, rpm=600, seed=3, **fleet) as f:
        yield app, f


async def _run(fleet: Fleet, n: int) -> None:
    handles = [await fleet.submit_response(model="m", input=str(i)) for i in range(n)]
    for handle in handles:
        await handle


@pytest.mark.looptime
@pytest.mark.parametrize("per_second", [10, None], ids=["set", "learned"])
async def test_the_busiest_second_stays_within_the_share(per_second: int | None) -> None:
    """150 runs want far more than 10 requests a second: none of the 11th gets through,
    and no 429 comes back, whether the share is set or learned from the first answers."""
    with capture_logs() as logs:
        async with in_process(per_second=per_second) as (app, fleet):
            await _run(fleet, 150)
            assert fleet.quota.stats().per_second == 10
    sim = app.snapshot()
    assert sim["rate_limited"] == 0
    assert sim["peak_second"]["peak"] <= 10
    assert sum(sim["responses"]["by_status"].values()) == 150
    learned = [e for e in logs if e["event"] == "quota_per_second_learned"]
    assert len(learned) == (per_second is None)


class Stalling(httpx2.AsyncBaseTransport):
    """The network to an in-process simulator whose process stalls: every ``every`` seconds,
    what is sent waits until ``stall`` seconds have passed (a loaded machine's loop)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, every: float, stall: float) -> None:
        self.inner, self.every, self.stall = inner, every, stall

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        into = asyncio.get_running_loop().time() % self.every
        if into < self.stall:
            await asyncio.sleep(self.stall - into)
        return await self.inner.handle_async_request(request)


@pytest.mark.looptime
async def test_stalls_longer_than_the_quarter_second_bring_no_429() -> None:
    """A stall holds requests admitted apart and lets them arrive together; the cap allows for
    the longest recent round trip, which the stalls lengthen, so none is over the share."""
    app = SimApp({"seed": 5, **RUNS})
    stalling = Stalling(httpx2.ASGITransport(app=app), every=1.7, stall=0.45)
    http = DefaultAsyncHttpxClient(transport=stalling)
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    async with client, Fleet(client, rpm=600, seed=3, per_second=10) as fleet:
        await _run(fleet, 150)
    sim = app.snapshot()
    assert sim["rate_limited"] == 0
    assert sim["peak_second"]["peak"] <= 10


def _busiest(times: list[float], span: float) -> int:
    return max(sum(1 for u in times if t <= u < t + span) for t in times)


@pytest.mark.looptime
@pytest.mark.parametrize("per_second", [10, None])
async def test_the_quota_admits_the_share_in_any_second_and_delay(per_second: int | None) -> None:
    """With the share, at most 10 in any 1.25 s of admissions (a second plus the quarter second
    requests may bunch by on the way); the minute's bucket alone lets 17 into one."""
    loop = asyncio.get_running_loop()
    quota = RequestQuota(600, per_second=per_second)
    times = []
    for _ in range(60):
        await quota.acquire(Priority.POLL)
        times.append(loop.time())
    if per_second is None:
        assert _busiest(times, 1.0) >= 17
    else:
        assert _busiest(times, 1.25 - 1e-6) == 10  # a microsecond: the clock's step
        assert len(times) / (times[-1] - times[0]) >= 7.5  # about 8 a second, sustained


async def test_a_per_second_share_beside_a_shared_quota_is_refused_in_one_line() -> None:
    client = AsyncOpenAI(api_key=API_KEY)
    with pytest.raises(ValueError, match=r"^per_second cannot be set beside a shared quota"):
        Fleet(client, rpm=600, per_second=10, quota=RequestQuota(600))
    with pytest.raises(ValueError, match=r"^per_second must be a number of requests of at least 1"):
        Fleet(client, rpm=600, per_second=0)
    await client.close()


def test_a_429_despite_the_share_widens_the_spread_allowed_for() -> None:
    cap = WindowCap(10, 1.0, delay=0.25)
    assert [cap.widen(), cap.widen(), cap.widen()] == [0.5, 1.0, 1.0]  # at most the window
    assert cap.span == 2.0
    assert WindowCap(10, 1.0).widen() == 0.1


@pytest.mark.looptime
async def test_the_quota_widens_once_per_back_off_not_per_echo() -> None:
    quota = RequestQuota(600, per_second=10)
    refused = {"retry-after-ms": "100"}
    with capture_logs() as logs:
        quota.observe(refused, status=429)
        quota.observe(refused, status=429)  # in flight when the first came back: an echo
    widened = [e["delay"] for e in logs if e["event"] == "quota_per_second_widened"]
    assert widened == [0.5]


def test_the_bench_names_the_share_as_a_fleet_setting() -> None:
    from runfleet.bench.strategy import BenchError, parse_strategy

    assert parse_strategy("fleet:per_second=10", "responses").number("per_second", 0) == 10
    with pytest.raises(BenchError, match="per_second must be a number >= 1"):
        parse_strategy("fleet:per_second=0.5", "responses")
