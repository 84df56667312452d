"""Why the p95 guard widens learned gaps to 0.6 of the classic loop's and not further.

For each margin, five run-time shapes, five seeds of 1,000 runs each through ``bench.race``:
how many of the 25 p95 detection latencies went past the classic loop's, and the largest
ratio. The margin is ``latency_guard._RELAX_MARGIN``, set here for the measure only.

    .venv/bin/python benchmarks/guard_margin.py   # about 1 minute
"""

from __future__ import annotations

from runfleet.bench.race import lognormal, race, uniform
from runfleet.polling import latency_guard

SHAPES = {
    "lognormal 2.5 s, sigma 0.5": lognormal(2.5, 0.5),
    "lognormal 1 s, sigma 0.6": lognormal(1.0, 0.6),
    "lognormal 4 s, sigma 0.3": lognormal(4.0, 0.3),
    "uniform 0-8 s": uniform(0.0, 8.0),
    "uniform 1-3 s": uniform(1.0, 3.0),
}


def main() -> None:
    kept = latency_guard._RELAX_MARGIN
    print("| margin | p95s over the classic loop's | largest p95 / classic's |")
    print("|---|---|---|")
    try:
        for margin in (0.6, 0.7, 1.0):
            latency_guard._RELAX_MARGIN = margin
            ratios = [
                r.learned_p95 / r.classic_p95
                for draw in SHAPES.values()
                for r in (race(draw, seed, 1000) for seed in range(5))
            ]
            over = sum(ratio > 1.0 for ratio in ratios)
            print(f"| {margin} | {over} of {len(ratios)} | {max(ratios):.2f} |")
    finally:
        latency_guard._RELAX_MARGIN = kept


if __name__ == "__main__":
    main()
