"""A run's status is a pure function of time: checked at literal instants, no clock."""

from __future__ import annotations

import pytest

from runfleet.sim.lifecycle import Job, JobStatus, Plan

COMPLETED = Plan(final=JobStatus.COMPLETED, error_code=None, rounds=0, stalled=False)


def job(
    rounds: int = 0, expires: float | None = None, final: JobStatus = JobStatus.COMPLETED
) -> Job:
    plan = Plan(final=final, error_code=None, rounds=rounds, stalled=False)
    return Job(
        id="run_1",
        created=0.0,
        running_at=1.0,
        done_at=5.0,
        plan=plan,
        rounds_left=rounds,
        expires_at=expires,
    )


@pytest.mark.parametrize(
    ("now", "status", "since"),
    [
        (0.0, JobStatus.QUEUED, 0.0),
        (0.99, JobStatus.QUEUED, 0.0),
        (1.0, JobStatus.IN_PROGRESS, 1.0),
        (4.99, JobStatus.IN_PROGRESS, 1.0),
        (5.0, JobStatus.COMPLETED, 5.0),
        (500.0, JobStatus.COMPLETED, 5.0),
    ],
)
def test_status_follows_the_timeline(now: float, status: JobStatus, since: float) -> None:
    assert job().status_at(now) == (status, since)


def test_failed_plan_ends_failed() -> None:
    assert job(final=JobStatus.FAILED).status_at(6.0) == (JobStatus.FAILED, 5.0)


def test_tool_round_stops_an_assistants_run_in_requires_action() -> None:
    j = job(rounds=1, expires=600.0)
    assert j.status_at(5.0) == (JobStatus.REQUIRES_ACTION, 5.0)


def test_tool_round_completes_a_response() -> None:
    j = job(rounds=1)
    j.stops_for_action = False
    assert j.status_at(5.0) == (JobStatus.COMPLETED, 5.0)


def test_resume_shows_old_action_during_lag_then_works_again() -> None:
    j = job(rounds=1, expires=600.0)
    j.resume(now=10.0, lag=2.0, work=3.0)
    assert j.status_at(11.0) == (JobStatus.REQUIRES_ACTION, 5.0)
    assert j.status_at(12.0) == (JobStatus.IN_PROGRESS, 12.0)
    assert j.status_at(15.0) == (JobStatus.COMPLETED, 15.0)


def test_unanswered_requires_action_expires_at_expires_at() -> None:
    j = job(rounds=1, expires=600.0)
    assert j.status_at(599.0)[0] is JobStatus.REQUIRES_ACTION
    assert j.status_at(600.0) == (JobStatus.EXPIRED, 600.0)
    assert j.status_at(10_000.0) == (JobStatus.EXPIRED, 600.0)


def test_run_that_finished_before_expiry_stays_finished() -> None:
    assert job(expires=600.0).status_at(700.0) == (JobStatus.COMPLETED, 5.0)


def test_run_still_working_at_expiry_expires() -> None:
    j = job(expires=3.0)
    assert j.status_at(4.0) == (JobStatus.EXPIRED, 3.0)


def test_cancel_goes_through_cancelling_to_cancelled() -> None:
    j = job()
    j.cancel(now=2.0, delay=0.5)
    assert j.status_at(1.9)[0] is JobStatus.IN_PROGRESS
    assert j.status_at(2.2) == (JobStatus.CANCELLING, 2.0)
    assert j.status_at(2.5) == (JobStatus.CANCELLED, 2.5)
    assert j.status_at(99.0) == (JobStatus.CANCELLED, 2.5)


def test_detection_latency_counts_each_new_state_once() -> None:
    j = job(rounds=1, expires=600.0)
    j.observe(3.0)  # in progress: nothing to detect
    j.observe(6.5)  # requires_action since 5.0: latency 1.5
    j.observe(7.0)  # same state: not again
    j.resume(now=7.0, lag=0.0, work=1.0)
    j.observe(8.25)  # completed since 8.0: latency 0.25
    assert j.latencies == [1.5, 0.25]
    assert j.retrieves == 4
