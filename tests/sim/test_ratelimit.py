"""The simulated quota: a token bucket with sub-minute windows, storms, and OpenAI's formats."""

from __future__ import annotations

import pytest

from runfleet.sim.ratelimit import PeakWindow, TokenBucket, go_duration
from runfleet.sim.scenario import Quota, Storms


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.12, "120ms"),
        (0.0, "0ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (360.0, "6m0s"),
        (3725.0, "1h2m5s"),
    ],
)
def test_go_duration_formats_like_openai(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_one_second_window_admits_a_seconds_share_then_paces() -> None:
    bucket = TokenBucket(Quota(rpm=600, window=1), Storms())
    admitted = [bucket.admit(0.0).admitted for _ in range(12)]
    assert admitted.count(True) == 10
    refused = bucket.admit(0.0)
    assert not refused.admitted
    assert refused.retry_after == pytest.approx(0.1)
    assert bucket.admit(0.1).admitted
    assert not bucket.admit(0.1).admitted


def test_minute_window_allows_the_whole_minute_at_once() -> None:
    bucket = TokenBucket(Quota(rpm=120, window=60), Storms())
    assert all(bucket.admit(0.0).admitted for _ in range(120))
    assert not bucket.admit(0.0).admitted


def test_rejected_requests_count_when_configured() -> None:
    bucket = TokenBucket(Quota(rpm=60, window=1, count_rejected=True), Storms())
    assert bucket.admit(0.0).admitted
    assert not bucket.admit(0.0).admitted  # pushes the bucket into debt
    assert not bucket.admit(1.0).admitted  # the debt is paid first
    assert bucket.admit(3.0).admitted


def test_storm_refuses_everything_for_its_duration() -> None:
    bucket = TokenBucket(Quota(rpm=6000, window=60), Storms(every=100, duration=5))
    storm = bucket.admit(102.0)
    assert not storm.admitted
    assert storm.storm
    assert storm.retry_after == pytest.approx(3.0)
    assert bucket.admit(105.0).admitted


def test_remaining_and_reset_describe_the_bucket() -> None:
    bucket = TokenBucket(Quota(rpm=600, window=1), Storms())
    assert bucket.remaining_fraction(0.0) == 1.0
    for _ in range(5):
        bucket.admit(0.0)
    assert bucket.remaining_fraction(0.0) == pytest.approx(0.5)
    assert bucket.until_full(0.0) == pytest.approx(0.5)


def test_peak_window_finds_the_busiest_sliding_minute() -> None:
    peak = PeakWindow(60.0)
    for t in [0, 10, 20, 59.9, 61, 62, 63, 200]:
        peak.record(float(t))
    assert peak.peak == 6  # 10..63 are within one 60 s window
    assert peak.current(200.0) == 1
