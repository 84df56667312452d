"""The learned schedule against the classic loop over 20 seeds: the figures its docs quote.

For each run-time distribution of ``tests/test_learning.py`` (which asserts bounds on 5 seeds),
:func:`runfleet.bench.race.race` polls 1,000 runs one after another with each schedule, the
learned one starting empty and learning from its own polls, and this prints the range over
seeds 0-19 of the learned schedule's polls per run and p95 detection latency, each divided by
the classic loop's. Then, on runs of 8 s (lognormal, sigma 0.3), the mean of those ratios for
two values of ``PollPolicy.latency_fraction``, which its docstring quotes.

    .venv/bin/python benchmarks/learned_race.py      # about ten seconds
"""

from __future__ import annotations

import statistics

from runfleet.bench.race import Draw, fixed, lognormal, race, uniform
from runfleet.polling.policy import PollPolicy

SEEDS = range(20)
DRAWS: dict[str, Draw] = {
    "fixed 8 s": fixed(8.0),
    "lognormal 8 s, sigma 0.3": lognormal(8.0, 0.3),
    "lognormal 8 s, sigma 0.5": lognormal(8.0, 0.5),
    "uniform 4-12 s": uniform(4.0, 12.0),
    "lognormal 30 s, sigma 0.3": lognormal(30.0, 0.3),
    "fixed 30 s": fixed(30.0),
    "lognormal 8 s, sigma 1": lognormal(8.0, 1.0),
    "lognormal 30 s, sigma 1": lognormal(30.0, 1.0),
    "uniform 0-16 s": uniform(0.0, 16.0),
    "lognormal 3 s, sigma 0.3": lognormal(3.0, 0.3),
    "fixed 2 s": fixed(2.0),
}


def main() -> None:
    print("| run times | polls vs classic | p95 detection latency vs classic |")
    print("|---|---|---|")
    for name, draw in DRAWS.items():
        results = [race(draw, seed) for seed in SEEDS]
        polls = [r.learned_polls / r.classic_polls for r in results]
        p95 = [r.learned_p95 / r.classic_p95 for r in results]
        print(f"| {name} | {min(polls):.2f}-{max(polls):.2f} | {min(p95):.2f}-{max(p95):.2f} |")
    print()
    for fraction in (0.25, 0.35):
        policy = PollPolicy(latency_fraction=fraction)
        results = [race(lognormal(8.0, 0.3), seed, policy=policy) for seed in SEEDS]
        mean_polls = statistics.fmean(r.learned_polls / r.classic_polls for r in results)
        mean_p95 = statistics.fmean(r.learned_p95 / r.classic_p95 for r in results)
        print(
            f"latency_fraction {fraction}: {mean_polls:.2f} of the polls, {mean_p95:.2f} of the p95"
        )


if __name__ == "__main__":
    main()
