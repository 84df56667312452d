"""``PollPolicy(comb=True)`` against the classic loop on many run-time shapes, seed by seed.

The grid (``benchmarks/grid.py --offline --comb``) shows means over three seeds; what keeps the
comb from being the default is its worst seeds, so this prints, per shape, the range over
seeds of the comb's polls per run and p95 detection latency (each divided by the classic
loop's, :func:`runfleet.bench.race.race`, 1,000 runs) and how many seeds end over the classic
loop's p95. ``--probe-share 0`` is the comb without probes.

    .venv/bin/python benchmarks/comb_race.py                  # about two minutes
    .venv/bin/python benchmarks/comb_race.py --probe-share 0
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import learned_race  # the shapes it quotes: benchmarks/ runs as scripts, side by side
from runfleet.bench.race import Draw, lognormal, race, uniform
from runfleet.polling.policy import PollPolicy

DRAWS: dict[str, Draw] = {
    **learned_race.DRAWS,
    "uniform 1-3 s": uniform(1.0, 3.0),
    "lognormal 1 s, sigma 0.6": lognormal(1.0, 0.6),
    "lognormal 2.5 s, sigma 0.5": lognormal(2.5, 0.5),
}


def shape(name: str, seeds: int, share: float) -> str:
    policy = PollPolicy(comb=True, probe_share=share)
    results = [race(DRAWS[name], seed, 1000, policy) for seed in range(seeds)]
    polls = [r.learned_polls / r.classic_polls for r in results]
    p95 = [r.learned_p95 / r.classic_p95 for r in results]
    over = sum(x > 1 for x in p95)
    return (
        f"| {name} | {min(polls):.2f}-{max(polls):.2f} | {min(p95):.2f}-{max(p95):.2f} | {over} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--probe-share", type=float, default=PollPolicy().probe_share)
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    args = parser.parse_args()
    print(f"comb, probe_share {args.probe_share}, seeds 0-{args.seeds - 1}, 1,000 runs each")
    print("| run times | polls vs classic | p95 vs classic | seeds over classic's p95 |")
    print("|---|---|---|---|")
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(shape, name, args.seeds, args.probe_share) for name in DRAWS]
        for future in futures:
            print(future.result(), flush=True)


if __name__ == "__main__":
    main()
