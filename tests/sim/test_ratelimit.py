"""The simulated quotas: requests and tokens over sub-minute windows, storms, OpenAI's formats."""

from __future__ import annotations

import pytest

from runfleet.sim.lifecycle import Job, JobStatus, Plan, Segment
from runfleet.sim.ratelimit import PeakWindow, TokenBucket, TokenWindow, go_duration
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


def test_a_log_admits_no_more_than_the_share_in_any_window() -> None:
    """A bucket lets 10 at 0.0 and 10 more during the next second; a log lets no 11th in."""
    bucket = TokenBucket(Quota(rpm=600, window=1), Storms())
    assert sum(bucket.admit(t / 20).admitted for t in range(20)) == 19
    log = TokenBucket(Quota(rpm=600, window=1, enforce="log"), Storms())
    assert sum(log.admit(t / 20).admitted for t in range(20)) == 10
    refused = log.admit(0.95)
    assert refused.retry_after == pytest.approx(0.05)  # when the arrival at 0.0 leaves
    assert log.remaining_fraction(0.95) == 0.0
    assert log.until_full(0.95) == pytest.approx(0.5)  # the last, at 0.45, leaves at 1.45
    assert log.admit(1.0).admitted
    assert not log.admit(1.0).admitted


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


def _job(done_at: float, final: JobStatus = JobStatus.COMPLETED) -> Job:
    plan = Plan(final=final, error_code=None, rounds=0, stalled=False)
    return Job("resp_1", 0.0, 0.0, done_at, plan, rounds_left=0, stops_for_action=False)


def test_token_window_charges_input_and_reservation_then_refunds_the_unused_part() -> None:
    window = TokenWindow(Quota(tpm=6000, window=60))
    seg = Segment(0.0, input=1000, reserved=2000, output=300)
    assert window.admit(0.0, seg).admitted
    job = _job(done_at=10.0)
    job.charge(seg)
    window.track(job)
    assert window.remaining_fraction(0.0) == pytest.approx(0.5)
    # 10 s later: refilled 1000 (100/s), and the 1700 reserved but not produced came back
    assert window.remaining_fraction(10.0) == pytest.approx(5700 / 6000)
    assert (window.charged, window.refunded) == (3000, 1700)
    assert job.usage() == (1000, 300)


def test_token_window_refuses_with_the_wait_for_enough_tokens() -> None:
    window = TokenWindow(Quota(tpm=600, window=60))  # 600 tokens, 10 per second
    assert window.admit(0.0, Segment(0.0, 100, 400, 50)).admitted
    refused = window.admit(0.0, Segment(0.0, 100, 200, 50))
    assert not refused.admitted
    assert not refused.too_large
    assert refused.retry_after == pytest.approx(20.0)
    assert window.charged == 500  # a refused request is not charged


def test_token_window_refuses_for_good_what_exceeds_the_whole_limit() -> None:
    window = TokenWindow(Quota(tpm=600, window=60))
    refused = window.admit(0.0, Segment(0.0, 500, 200, 50))
    assert (refused.admitted, refused.too_large, refused.retry_after) == (False, True, 0.0)


def test_a_request_bigger_than_the_sub_minute_window_waits_for_a_full_one() -> None:
    """6000 TPM over 1 s windows holds 100 tokens; a 300-token request still gets through."""
    window = TokenWindow(Quota(tpm=6000, window=1))
    assert window.admit(0.0, Segment(0.0, 100, 200, 50)).admitted  # into debt: -200
    refused = window.admit(0.5, Segment(0.5, 10, 20, 5))
    assert refused.retry_after == pytest.approx(1.8)  # from -150 back to 30 at 100/s
    assert window.admit(2.31, Segment(2.31, 10, 20, 5)).admitted


@pytest.mark.parametrize(
    ("final", "output"),
    [(JobStatus.COMPLETED, 300), (JobStatus.INCOMPLETE, 2000), (JobStatus.FAILED, 0)],
)
def test_a_pass_uses_what_its_ending_says(final: JobStatus, output: int) -> None:
    """Incomplete means it hit max_output_tokens; a failed pass produced nothing billable."""
    job = _job(done_at=5.0, final=final)
    seg = Segment(0.0, input=10, reserved=2000, output=300)
    job.charge(seg)
    assert job.output_of(seg) == output
    assert job.unused(seg) == 2000 - output


def test_a_cancel_settles_the_pass_when_it_is_cancelled() -> None:
    window = TokenWindow(Quota(tpm=60_000, window=60))
    seg = Segment(0.0, input=10, reserved=2000, output=300)
    window.admit(0.0, seg)
    job = _job(done_at=50.0)
    job.charge(seg)
    window.track(job)
    job.cancel(1.0, 0.5)
    window.track(job)
    window.remaining_fraction(1.5)
    assert (seg.settled, seg.refunded) == (True, 2000)


def test_without_tpm_tokens_are_counted_never_refused() -> None:
    window = TokenWindow(Quota())
    assert window.admit(0.0, Segment(0.0, 10**9, 10**9, 1)).admitted
    assert window.snapshot(0.0)["charged"] == 2 * 10**9


def test_token_peak_counts_each_pass_at_admission_net_of_its_refund() -> None:
    window = TokenWindow(Quota(tpm=60_000, window=60))
    for t in (0.0, 30.0, 70.0):
        seg = Segment(t, input=100, reserved=900, output=400)
        window.admit(t, seg)
        job = _job(done_at=t + 5)
        job.charge(seg)
        window.track(job)
    snap = window.snapshot(100.0)
    assert snap["peak_window"] == {"seconds": 60.0, "peak": 1000, "quota": 60_000}
    assert (snap["charged"], snap["refunded"], snap["used"]) == (3000, 1500, 1500)
