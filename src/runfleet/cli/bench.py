"""``runfleet bench``: its options, the table it prints and its exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .values import SCENARIOS, positive

__all__ = ["add_bench_parser", "run_bench_command"]


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure the requests, quota use and latency of polling strategies",
        description="Run the same workload once per polling strategy against the simulator "
        "(reset with the same seed each time) and print one table: runs ok/failed/lost, "
        "requests and polls per run, 429s, peak requests per 60 s against the quota, "
        "detection latency, wall time, each as a ratio to the classic loop. Durations are "
        "in scenario seconds.",
    )
    bench.add_argument(
        "--scenario",
        default="ample",
        help=f"{SCENARIOS} (default: ample)",
    )
    bench.add_argument("--runs", type=int, default=500, help="runs per strategy (default: 500)")
    bench.add_argument(
        "--kind",
        choices=("responses", "assistants"),
        default="responses",
        help="background responses or Assistants runs (default: responses)",
    )
    bench.add_argument(
        "--strategies",
        metavar="LIST",
        help="comma-separated: naive, classic, fixed2s, sdk (assistants), cookbook, fleet, with "
        "settings after a colon (classic:initial=1s,cap=10s  fleet:latency=2s  "
        "fleet:webhooks,drop=20%%); default: all that apply to the kind",
    )
    bench.add_argument(
        "--frontier",
        action="store_true",
        help="sweep the classic loop's interval and cap and the fleet's latency target; "
        "--plot then draws polls per run against p95 latency",
    )
    bench.add_argument(
        "--in-flight", type=int, default=100, help="most runs started at once (default: 100)"
    )
    bench.add_argument(
        "--time-scale",
        type=positive,
        help="real seconds per scenario second (default: the scenario's own)",
    )
    bench.add_argument(
        "--timeout", type=positive, default=60.0, help="naive and classic give up after (60)"
    )
    bench.add_argument(
        "--limit", type=positive, default=600.0, help="any run unresolved after this is lost (600)"
    )
    bench.add_argument("--seed", type=int, help="override the scenario's seed")
    bench.add_argument(
        "--completion-window",
        choices=("soonest", "2h", "8h"),
        help="the window every response asks for (default: the scenario's; overnight: 8h)",
    )
    bench.add_argument(
        "--base-url", help="a `runfleet sim` started elsewhere (default: start one in a child)"
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    bench.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="draw it (needs runfleet[plot])"
    )


def run_bench_command(args: argparse.Namespace) -> int:
    import anyio

    from ..bench import BenchConfig, BenchError, StrategyRow, run_bench
    from ..bench.plot import FRONTIER, plot_bench, plot_frontier, pyplot

    def progress(row: StrategyRow) -> None:
        print(
            f"runfleet bench: {row.strategy}: {row.ok + row.failed}/{row.runs} runs seen to "
            f"their end in {row.wall:.0f} s, {row.requests:,} requests, "
            f"{row.quota_errors} 429s, {row.lost} lost"
            + "".join(
                f"; lost: {n} x {why}" for why, n in row.extra.get("lost_because", {}).items()
            ),
            file=sys.stderr,
            flush=True,
        )

    strategies = args.strategies
    if args.frontier and strategies is None:
        strategies = ",".join(FRONTIER)
    cfg = BenchConfig(
        scenario=args.scenario,
        runs=args.runs,
        kind=args.kind,
        strategies=strategies,
        in_flight=args.in_flight,
        time_scale=args.time_scale,
        timeout=args.timeout,
        limit=args.limit,
        seed=args.seed,
        base_url=args.base_url,
        completion_window=args.completion_window,
    )
    try:
        cfg.check()
        if args.plot is not None:
            pyplot()  # a missing extra is said before the bench runs, not after
        result = anyio.run(lambda: run_bench(cfg, on_row=progress))
        print(result.heading())
        print(result.table(), flush=True)
        for row in result.rows:  # at a small time scale a hand-written loop is round-trip bound
            if (replayed := row.extra.get("schedule_polls_per_run")) is not None:
                print(f"{row.strategy}: its schedule at real time: {replayed:,} polls per run")
            if (per_response := row.extra.get("polls_per_response")) is not None:
                made = row.extra["responses"]
                print(f"{row.strategy}: {per_response:.2f} polls per response ({made:,} responses)")
        if args.json is not None:
            result.write_json(args.json)
        if args.plot is not None:
            (plot_frontier if args.frontier else plot_bench)(result, args.plot)
    except BenchError as exc:
        print(f"runfleet bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("runfleet bench: interrupted", file=sys.stderr)
        return 130
    return 0
