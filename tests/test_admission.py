"""The quota's pure accounting, with literal times: bucket math, windows, back-off, recovery."""

from __future__ import annotations

import itertools
import math

import pytest

from runfleet.admission.bucket import LeakyBucket, Rate, RateGovernor
from runfleet.admission.headers import RateLimitHeaders


def max_in_window(times: list[float], width: float) -> int:
    """The most admissions in any closed window ``[t, t + width]`` (sorted times)."""
    best, end = 0, 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] <= start + width:
            end += 1
        best = max(best, end - start_index)
    return best


def admit_greedily(
    bucket: LeakyBucket, rate: Rate, until: float, start: float = 0.0
) -> list[float]:
    """Ask again exactly when the bucket says: the fastest any caller could go."""
    now, times = start, []
    while now < until:
        wait = bucket.admit(now, rate)
        if wait == 0.0:
            times.append(now)
        else:
            now += wait
    return times


def test_the_drain_rate_leaves_room_for_the_burst() -> None:
    assert Rate(rpm=3000, capacity=50).per_second == pytest.approx(2950 / 60)


def test_a_fresh_bucket_admits_one_burst_then_one_per_drain_step() -> None:
    bucket, rate = LeakyBucket(), Rate(rpm=600, capacity=10)
    assert [bucket.admit(0.0, rate) for _ in range(10)] == [0.0] * 10
    assert bucket.admit(0.0, rate) == pytest.approx(1 / rate.per_second)
    assert bucket.admit(1 / rate.per_second, rate) == 0.0


@pytest.mark.parametrize(("rpm", "capacity"), [(600, 10), (60, 1), (3000, 50), (3000, 1), (90, 30)])
def test_greedy_admission_never_exceeds_rpm_in_any_minute_or_burst_in_any_second(
    rpm: float, capacity: float
) -> None:
    rate = Rate(rpm=rpm, capacity=capacity)
    times = admit_greedily(LeakyBucket(), rate, until=300.0)
    assert max_in_window(times, 60.0) <= rpm
    assert max_in_window(times, 1.0) <= math.floor(capacity + rate.per_second)
    # ...and it is not timid: a whole minute's quota is used (give or take float rounding).
    assert max_in_window(times, 60.0) >= rpm - 1


def test_a_bucket_filled_at_a_pause_end_resumes_one_step_later_not_in_a_burst() -> None:
    bucket, rate = LeakyBucket(), Rate(rpm=600, capacity=10)
    bucket.fill_at(12.0, rate)
    step = 1 / rate.per_second
    assert bucket.admit(12.0, rate) == pytest.approx(step)
    times = admit_greedily(bucket, rate, until=14.0, start=12.0)
    assert times[0] == pytest.approx(12.0 + step)
    assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(times))


def test_a_lowered_capacity_makes_an_overfull_bucket_wait() -> None:
    bucket = LeakyBucket()
    for _ in range(10):
        bucket.admit(0.0, Rate(rpm=600, capacity=10))
    lower = Rate(rpm=120, capacity=2)
    assert bucket.admit(0.0, lower) == pytest.approx(9 / lower.per_second)


def test_an_older_now_drains_nothing() -> None:
    bucket, rate = LeakyBucket(), Rate(rpm=600, capacity=10)
    for _ in range(10):
        bucket.admit(5.0, rate)
    # Full as of 5.0: a caller whose clock read 4.0 waits one step, neither less nor more.
    assert bucket.admit(4.0, rate) == pytest.approx(1 / rate.per_second)


# -- RateGovernor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rpm": 0}, "rpm must be"),
        ({"rpm": -5}, "rpm must be"),
        ({"rpm": math.nan}, "rpm must be"),
        ({"rpm": math.inf}, "rpm must be"),
        ({"rpm": 1}, "rpm must be"),
        ({"rpm": 60, "burst": 0}, "burst must be"),
        ({"rpm": 60, "burst": -1}, "burst must be"),
        ({"rpm": 60, "burst": 0.5}, "burst must be"),
        ({"rpm": 60, "burst": 60}, "burst must be"),
        ({"rpm": 60, "burst": math.nan}, "burst must be"),
        ({"rpm": 60, "backoff_factor": 1.0}, "backoff_factor"),
        ({"rpm": 60, "rate_floor": 0}, "rate_floor"),
        ({"rpm": 60, "recovery_interval": 0}, "recovery_interval"),
        ({"rpm": 60, "default_pause": 5, "max_pause": 1}, "max_pause"),
        ({"rpm": 60, "delay_allowance": -0.1}, "delay_allowance"),
    ],
)
def test_settings_out_of_range_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateGovernor(**kwargs)


@pytest.mark.parametrize(
    ("rpm", "burst", "capacity"),
    [(3000, 50.0, 37.5), (600, 10.0, 7.5), (60, 1.0, 1.0), (30, 1.0, 1.0), (1.5, 1.0, 1.0)],
)
def test_the_default_burst_is_one_seconds_share_less_a_quarter_second_held_back(
    rpm: float, burst: float, capacity: float
) -> None:
    governor = RateGovernor(rpm)
    assert governor.burst == burst
    assert governor.rate(0.0) == Rate(rpm=rpm, capacity=capacity, delay=0.25)


def test_the_capacity_held_back_is_what_drains_in_the_delay_allowance() -> None:
    assert RateGovernor(600, burst=10, delay_allowance=0.0).rate(0.0).capacity == 10
    assert RateGovernor(600, burst=10, delay_allowance=0.5).rate(0.0).capacity == 5
    assert RateGovernor(600, burst=10, delay_allowance=5.0).rate(0.0).capacity == 1  # at least 1


def test_a_lower_server_limit_is_adopted_and_a_higher_one_never() -> None:
    governor = RateGovernor(3000)
    governor.learn(0.0, RateLimitHeaders(limit=5000))
    assert governor.rate(0.0).rpm == 3000
    governor.learn(0.0, RateLimitHeaders(limit=1200))
    assert governor.rate(0.0) == Rate(rpm=1200, capacity=15, delay=0.25)
    governor.learn(0.0, RateLimitHeaders(limit=1))  # nonsense: floored so the bucket drains
    assert governor.rate(0.0).rpm == 2.0


def test_an_empty_server_quota_holds_admissions_until_its_reset() -> None:
    governor = RateGovernor(600)
    governor.learn(10.0, RateLimitHeaders(remaining=3, reset=5.0))
    assert governor.paused_until == -math.inf
    governor.learn(10.0, RateLimitHeaders(remaining=0, reset=1.5))
    assert governor.paused_until == 11.5
    assert governor.rate(11.5).rpm == 600  # a hold is not a back-off


def test_a_429_pauses_for_its_retry_after_and_lowers_the_rate() -> None:
    governor = RateGovernor(600)
    assert governor.on_rate_limited(10.0, retry_after=2.0)
    assert governor.paused_until == 12.0
    assert governor.rate(12.0) == Rate(rpm=420, capacity=5.25, delay=0.25)
    assert (governor.rate_limited, governor.consecutive_rate_limits) == (1, 1)


@pytest.mark.parametrize(
    ("retry_after", "paused_until"), [(None, 11.0), (math.nan, 11.0), (-3.0, 10.0), (1e6, 130.0)]
)
def test_the_pause_defaults_to_one_second_and_is_capped(
    retry_after: float | None, paused_until: float
) -> None:
    governor = RateGovernor(600)
    governor.on_rate_limited(10.0, retry_after)
    assert governor.paused_until == paused_until


def test_429s_echoing_during_a_pause_extend_it_but_back_off_only_once() -> None:
    governor = RateGovernor(600)
    governor.on_rate_limited(10.0, 2.0)
    assert not governor.on_rate_limited(10.1, 2.5)
    assert not governor.on_rate_limited(10.2, None)
    assert governor.paused_until == 12.6
    assert governor.rate(12.6).rpm == 420
    assert (governor.rate_limited, governor.consecutive_rate_limits) == (3, 1)


def test_back_off_stops_at_the_floor() -> None:
    governor = RateGovernor(600)
    for n in range(20):
        governor.on_rate_limited(10.0 * n, retry_after=1.0)
    assert governor.rate(191.0).rpm == 60.0
    assert governor.consecutive_rate_limits == 20


def test_the_rate_recovers_a_step_per_clean_interval_back_to_the_limit() -> None:
    governor = RateGovernor(600)
    governor.on_rate_limited(10.0, retry_after=2.0)  # 420 rpm from 12 s
    expected = {12.0: 420, 21.9: 420, 22.0: 480, 32.0: 540, 41.99: 540, 42.0: 600, 500.0: 600}
    assert {now: governor.rate(now).rpm for now in expected} == pytest.approx(expected)
    assert governor.rate(42.0) == Rate(rpm=600, capacity=7.5, delay=0.25)


def test_a_new_429_during_recovery_backs_off_from_where_the_rate_is() -> None:
    governor = RateGovernor(600)
    governor.on_rate_limited(10.0, retry_after=2.0)
    governor.on_rate_limited(32.0, retry_after=1.0)  # at 540 rpm
    assert governor.rate(33.0).rpm == pytest.approx(540 * 0.7)
    assert governor.consecutive_rate_limits == 2


def test_a_success_ends_a_run_of_consecutive_429s() -> None:
    governor = RateGovernor(600)
    governor.on_rate_limited(10.0, retry_after=1.0)
    governor.on_success()
    governor.on_rate_limited(20.0, retry_after=1.0)
    assert (governor.rate_limited, governor.consecutive_rate_limits) == (2, 1)
