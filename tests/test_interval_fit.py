"""The lognormal fit of interval-censored run times, with literal numbers and seeded draws."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from runfleet.polling.interval_fit import IntervalFit
from runfleet.polling.policy import PollPolicy

TOLERANCE = PollPolicy().fit_tolerance


def polled(times: list[float], first: float, gap: float, fit: IntervalFit) -> None:
    """Feed ``fit`` what polls at ``first``, ``first + gap``... see of runs of these times."""
    for t in times:
        k = max(0, math.ceil((t - first) / gap))
        seen = first + k * gap
        fit.add(None if k == 0 else seen - gap, seen, first)


def spread(n: int, median: float, sigma: float) -> list[float]:
    """Return ``n`` lognormal run times at evenly spaced quantiles, shuffled: no chance in them."""
    normal = NormalDist()
    times = [median * math.exp(sigma * normal.inv_cdf((i + 0.5) / n)) for i in range(n)]
    random.Random(n).shuffle(times)
    return times


def test_the_fit_recovers_the_distribution_whatever_the_polls() -> None:
    rng = random.Random(7)
    times = [rng.lognormvariate(math.log(8.0), 0.5) for _ in range(256)]
    for first, gap in ((0.5, 0.5), (6.0, 3.0), (9.0, 4.0)):
        fit = IntervalFit(256, tolerance=TOLERANCE)
        polled(times, first, gap, fit)
        result = fit.refit()
        assert result is not None
        assert math.exp(result.mu) == pytest.approx(8.0, rel=0.08), (first, gap)
        assert result.sigma == pytest.approx(0.5, rel=0.15), (first, gap)
        # Reading the poll times instead would put the median a half gap or more too late.
        naive = sorted(first + max(0, math.ceil((t - first) / gap)) * gap for t in times)[128]
        assert naive - math.exp(result.mu) > 0.3 * gap


def test_nothing_is_fitted_before_ten_runs_were_seen_working() -> None:
    fit = IntervalFit(256, tolerance=TOLERANCE)
    for _ in range(50):
        fit.add(None, 5.0, 5.0)  # all done at the first poll: they only say "before 5 s"
    for _ in range(9):
        fit.add(5.0, 8.0, 5.0)
    assert fit.refit() is None
    fit.add(5.0, 8.0, 5.0)
    assert fit.refit() is not None


def test_a_webhook_time_is_exact() -> None:
    fit = IntervalFit(64, tolerance=TOLERANCE)
    for t in (4.0, 8.0, 16.0) * 5:
        fit.add(t, t, None)
    result = fit.refit()
    assert result is not None
    assert math.exp(result.mu) == pytest.approx(8.0, rel=1e-9)
    assert result.sigma == pytest.approx(math.log(2) * math.sqrt(2 / 3), rel=1e-9)


def test_more_runs_done_at_the_first_poll_than_predicted_distrust_the_fit() -> None:
    fit = IntervalFit(256, tolerance=TOLERANCE)
    polled(spread(64, 8.0, 0.3), 6.0, 2.0, fit)
    assert fit.refit() is not None
    # The next runs are checked against that fit's prediction for their first poll: it holds.
    polled(spread(64, 8.0, 0.3), 6.0, 2.0, fit)
    first = fit.refit()
    assert first is not None
    assert first.surprise is None
    assert first.done_by(6.0) < 0.2
    # The runs got faster: every one is now done at the first poll at 6 s.
    surprises = []
    for _ in range(8):
        fit.add(None, 6.0, 6.0)
        result = fit.refit()
        surprises.append(None if result is None else result.surprise)
    assert surprises[-1] == "recent"
    assert surprises[0] is None  # one run is chance


@pytest.mark.parametrize(("tolerance", "distrusted"), [(TOLERANCE, True), (0.5, False)])
def test_the_window_check_allows_an_excess_up_to_the_tolerance(
    tolerance: float, distrusted: bool
) -> None:
    fit = IntervalFit(256, tolerance=tolerance)
    for _ in range(2):
        polled(spread(64, 8.0, 0.3), 6.0, 2.0, fit)
        fit.refit()
    # One run in four found done at the first poll at 6 s, where the fit expects one in six.
    surprises = set()
    for i, t in enumerate(spread(16, 8.0, 0.3)):
        if i % 4 == 0:
            fit.add(None, 6.0, 6.0)
        else:
            polled([t], 6.0, 2.0, fit)
        result = fit.refit()
        surprises.add(None if result is None else result.surprise)

    assert ("window" in surprises) is distrusted
    assert "recent" not in surprises
