"""How often the learned fit's window check distrusts runs that are exactly lognormal, and
what that costs.

``PollPolicy.fit_tolerance`` allows 3 points more runs done at the first poll than the fit
predicts, over the window. Near where the learned first poll sits (about a sixth of runs done
there), 3 points of 256 runs is under two standard deviations, so chance trips it. This prints
the share of observations distrusted, learning from the fleet's own polls, and the races of
:mod:`runfleet.bench.race` (polls and p95 latency against the classic loop, 10 seeds) with the
check as it is and with it switched off. Switched off, a uniform-from-0 spread gets through.

    .venv/bin/python benchmarks/fit_alarms.py      # from the project's root, a few seconds
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

from runfleet.bench.race import Draw, lognormal, race, uniform
from runfleet.polling.interval_fit import IntervalFit
from runfleet.polling.policy import PollPolicy

POLICY = PollPolicy()


def alarms(seed: int, sigma: float, runs: int = 1500) -> Counter[str]:
    """Return the fit's verdicts after the first 300 runs of lognormal runs (median 8 s)."""
    rng = random.Random(seed)
    fit = IntervalFit(POLICY.max_samples, tolerance=POLICY.fit_tolerance)
    first, gap = 6.0, 3.0
    verdicts: Counter[str] = Counter()
    for i in range(runs):
        current = fit.fit
        if current is not None and current.surprise is None:  # polled as the learned plan does
            gap = POLICY.latency_fraction * current.quantile(0.5)
            first = min(current.quantile(POLICY.early_share) + gap, current.quantile(0.5))
        t = rng.lognormvariate(math.log(8.0), sigma)
        k = max(0, math.ceil((t - first) / gap))
        fit.add(None if k == 0 else first + (k - 1) * gap, first + k * gap, first)
        result = fit.refit()
        if i >= 300 and result is not None:
            verdicts[result.surprise or "trusted"] += 1
    return verdicts


def races(draw: Draw, policy: PollPolicy) -> str:
    results = [race(draw, seed, policy=policy) for seed in range(10)]
    polls = [r.learned_polls / r.classic_polls for r in results]
    p95 = [r.learned_p95 / r.classic_p95 for r in results]
    return (
        f"polls {statistics.fmean(polls):.3f} (max {max(polls):.3f}) of classic's, "
        f"p95 {statistics.fmean(p95):.3f} (max {max(p95):.3f})"
    )


def main() -> None:
    for sigma in (0.3, 0.5):
        verdicts = sum((alarms(seed, sigma) for seed in range(10)), Counter())
        share = verdicts["window"] / sum(verdicts.values())
        print(f"lognormal sigma {sigma}: distrusted by the window check {share:.1%} ({verdicts})")
    draws = {"lognormal 8 s sigma 0.5": lognormal(8.0, 0.5), "uniform 0-16 s": uniform(0, 16)}
    off = PollPolicy(fit_tolerance=10.0)
    for label, policy in (("check as it is", POLICY), ("check off", off)):
        for name, draw in draws.items():
            print(f"{label:15} {name:24} {races(draw, policy)}")


if __name__ == "__main__":
    main()
