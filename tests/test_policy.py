"""The poll policy: its checks, and scaling it in time for a time-scaled simulator."""

from __future__ import annotations

import math

import pytest

from runfleet.polling.policy import PollPolicy
from runfleet.polling.schedule import Backoff


def test_scaled_multiplies_every_duration_and_keeps_the_rest() -> None:
    policy = PollPolicy(
        backoff=Backoff(initial=0.5, factor=1.5, cap=5.0, jitter=0.2, min_interval=0.05),
        latency_target=2.0,
        latency_fraction=0.3,
        min_samples=10,
        stall_factor=3.0,
        stall_floor=30.0,
        stall_unlearned=120.0,
    )

    # A power of two, so that the products are exact.
    assert policy.scaled(0.5) == PollPolicy(
        backoff=Backoff(initial=0.25, factor=1.5, cap=2.5, jitter=0.2, min_interval=0.025),
        latency_target=1.0,
        latency_fraction=0.3,
        min_samples=10,
        stall_factor=3.0,
        stall_floor=15.0,
        stall_unlearned=60.0,
        time_unit=0.5,
    )


def test_scaled_leaves_a_derived_latency_target_derived() -> None:
    scaled = PollPolicy().scaled(0.25)

    assert scaled.latency_target is None
    assert scaled.backoff == Backoff(initial=0.125, cap=1.25, min_interval=0.0125)
    assert (scaled.stall_floor, scaled.stall_unlearned) == (7.5, 30.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_a_scale_that_is_not_a_positive_number_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        PollPolicy().scaled(scale)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency_target": 0.0}, "latency_target must be > 0 seconds"),
        ({"latency_target": -1.0}, "latency_target must be > 0 seconds"),
        ({"latency_target": math.inf}, "latency_target must be > 0 seconds"),
        ({"latency_fraction": 0.0}, "latency_fraction must be > 0"),
        ({"latency_fraction": -0.1}, "latency_fraction must be a finite number >= 0"),
        ({"low_quantile": 0.0}, "0 < low_quantile < high_quantile < 1"),
        ({"low_quantile": 0.96}, "0 < low_quantile < high_quantile < 1"),
        ({"high_quantile": 1.0}, "0 < low_quantile < high_quantile < 1"),
        ({"min_samples": 0}, "1 <= min_samples <= max_samples"),
        ({"min_samples": 300}, "1 <= min_samples <= max_samples"),
        ({"max_keys": 0}, "max_keys must be >= 1"),
        ({"stall_factor": -1.0}, "stall_factor must be a finite number >= 0"),
        ({"stall_floor": math.nan}, "stall_floor must be a finite number >= 0"),
        ({"stall_unlearned": -5.0}, "stall_unlearned must be a finite number >= 0"),
        ({"probe_share": 1.0}, "probe_share must be >= 0 and < 1"),
        ({"probe_share": -0.1}, "probe_share must be >= 0 and < 1"),
        ({"probe_share": math.nan}, "probe_share must be >= 0 and < 1"),
    ],
)
def test_invalid_policy_is_refused_with_a_clear_message(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PollPolicy(**kwargs)  # type: ignore[arg-type]
