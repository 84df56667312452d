"""The ``runfleet`` command: argument parsing only; the work is in the public API."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import logs
from .batch.shards import Shard, merge_outputs
from .sim.scenario import BUILTIN_SCENARIOS, ScenarioError

__all__ = ["main"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    if not math.isfinite(value):  # an infinite time scale or limit never ends, it hangs
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _port(text: str) -> int:
    """Refuse a port the socket would refuse, as argparse refuses any bad value (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text}")
    return value


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runfleet",
        description="Keep thousands of asynchronous OpenAI runs in flight through one poll loop.",
    )
    parser.add_argument("--version", action="version", version=f"runfleet {version('runfleet')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = sub.add_parser(
        "sim",
        help="serve the OpenAI-compatible simulator",
        description="Serve an OpenAI-compatible simulator of background responses and "
        "Assistants runs, with quotas, faults and an out-of-band stats endpoint "
        "(GET /_sim/stats). Point a client at it with OPENAI_BASE_URL.",
    )
    sim.add_argument(
        "--scenario",
        default="ample",
        help=f"a built-in ({', '.join(BUILTIN_SCENARIOS)}) or a JSON file (default: ample)",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    sim.add_argument(
        "--port", type=_port, default=8787, help="port, 0-65535 (0 picks a free one; default: 8787)"
    )
    sim.add_argument(
        "--time-scale",
        type=_positive,
        help="multiply every scenario duration by this (0.1 runs 10x faster)",
    )
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    sim.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    sim.add_argument("--log-level", default="warning", help="uvicorn's log level")
    _batch_parser(sub)
    merge = sub.add_parser("merge", help="join `batch --shard` outputs, each line once")
    merge.add_argument("out", type=Path, metavar="OUT.jsonl")
    merge.add_argument("parts", type=Path, nargs="+", metavar="SHARD.jsonl")
    merge.add_argument("--input", type=Path, help="the batch's input: report missing lines")
    _bench_parser(sub)
    for command in sub.choices.values():
        _logging_options(command)
    return parser


def _logging_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("logging (always on stderr)")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show runfleet's info events; -vv adds debug events (default: warnings only)",
    )
    group.add_argument(
        "--log-format",
        choices=["console", "json"],
        default="console",
        help="readable lines, or one JSON object per event (default: console)",
    )


def _bench_parser(sub: Any) -> None:
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
        help=f"a built-in ({', '.join(BUILTIN_SCENARIOS)}) or a JSON file (default: ample)",
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
        type=_positive,
        help="real seconds per scenario second (default: the scenario's own)",
    )
    bench.add_argument(
        "--timeout", type=_positive, default=60.0, help="naive and classic give up after (60)"
    )
    bench.add_argument(
        "--limit", type=_positive, default=600.0, help="any run unresolved after this is lost (600)"
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


def _batch_parser(sub: Any) -> None:
    batch = sub.add_parser(
        "batch",
        help="run a JSONL file of prompts through one quota, resumably",
        description="Run every prompt of INPUT (one JSON object per line: "
        '{"id": ..., "prompt": ...} plus optional instructions, metadata, model) as a '
        "background response (--model) or an Assistants run (--assistant), through one "
        "rate-limited fleet. Results are appended to --out as they finish, one JSON line per "
        "item. A SQLite journal beside the output makes the same command resume after a "
        "crash, Ctrl-C or kill -9: finished items are not sent again, runs in flight are "
        "re-attached by id, and an item that may have been created twice (its create's answer "
        'was lost) says "recreated": true in its line, never silently. Exit status, for the '
        "whole file (this run and earlier ones): 0 every item completed, 1 some did not (a "
        "failed or timed-out run, an invalid or duplicate line), 2 nothing could start (an "
        "empty file, no key, no server, another batch holds the journal or the output), 130 "
        "interrupted (Ctrl-C), "
        "143 stopped by SIGTERM (both after --grace for the runs in flight).",
    )
    batch.add_argument("input", type=Path, metavar="INPUT.jsonl", help="the prompts, one per line")
    batch.add_argument("--out", type=Path, required=True, help="where result lines go (JSONL)")
    what = batch.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="run background responses with this model (default path)")
    what.add_argument("--assistant", metavar="ASSISTANT_ID", help="run legacy Assistants runs")
    batch.add_argument(
        "--rpm",
        type=_positive,
        help="requests per minute never to exceed (default: the server's "
        "x-ratelimit-limit-requests, read from one request before starting)",
    )
    batch.add_argument(
        "--tpm",
        type=_positive,
        help="tokens per minute never to exceed (default: the server's "
        "x-ratelimit-limit-tokens, learned from its answers)",
    )
    batch.add_argument(
        "--max-in-flight", type=int, default=200, help="runs alive at once (default: 200)"
    )
    batch.add_argument(
        "--timeout",
        type=_positive,
        help="seconds per run before it is cancelled on the server (default: none; 1.25 "
        "windows with --completion-window 2h/8h)",
    )
    batch.add_argument(
        "--completion-window",
        choices=("soonest", "2h", "8h"),
        help="background responses wait up to this long at 30%% (2h) or 40%% (8h) off per "
        "token; a line's own completion_window wins (default: soonest)",
    )
    batch.add_argument(
        "--tools",
        metavar="MODULE:ATTR",
        help="tool handlers: a tool, list of tools or ToolRegistry in a module "
        "(my_tools:TOOLS or path/to/file.py:TOOLS)",
    )
    batch.add_argument(
        "--base-url", help="the API's base URL (default: OPENAI_BASE_URL, else OpenAI's)"
    )
    batch.add_argument(
        "--sim",
        metavar="SCENARIO",
        help=f"start the built-in simulator in-process ({', '.join(BUILTIN_SCENARIOS)} or a "
        "JSON file) and run against it; no key needed",
    )
    batch.add_argument(
        "--sim-time-scale",
        type=_positive,
        default=1.0,
        help="the simulator's time scale: with --sim, run it this much faster (0.1: 10x); "
        "against `runfleet sim --time-scale X`, pass the same X. Polls, bursts and the classic "
        "estimate are scaled alike (default: 1)",
    )
    batch.add_argument(
        "--redis",
        metavar="URL",
        help="share the account's limits with every process given the same URL and account "
        "(redis://host:6379/0); an unreachable URL refuses the batch",
    )
    batch.add_argument(
        "--account", help="what --redis shares (default: a hash of the API key, never the key)"
    )
    batch.add_argument(
        "--on-redis-failure",
        choices=["fail_closed", "local_fallback"],
        default="fail_closed",
        help="when Redis goes away mid-run: wait for it (30 s) then fail admissions, or go on "
        "alone at limit / N (N from the heartbeats) until it is back (default: fail_closed)",
    )
    batch.add_argument(
        "--journal", type=Path, help="the SQLite journal (default: OUT.journal beside the output)"
    )
    batch.add_argument("--summary-json", type=Path, help="also write the summary to this file")
    batch.add_argument(
        "--strict", action="store_true", help="refuse the whole file if any line is invalid"
    )
    batch.add_argument("--fresh", action="store_true", help="forget the journal and start over")
    batch.add_argument(
        "--grace",
        type=_positive,
        default=60.0,
        help="after Ctrl-C or SIGTERM, seconds to let in-flight runs finish before handing "
        "them back to the journal (default: 60; keep it under a container's stop timeout)",
    )
    batch.add_argument(
        "--progress",
        choices=["auto", "bar", "lines", "off"],
        default="auto",
        help="a live bar on a terminal, periodic lines otherwise (default: auto)",
    )
    batch.add_argument("--shard", type=_shard, metavar="K/N", help="K of N: OUT.KofN.jsonl")
    batch.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics on it")
    batch.add_argument(
        "--progress-every",
        type=_positive,
        default=10.0,
        help="seconds between progress lines when not on a terminal (default: 10)",
    )


def _batch(args: argparse.Namespace) -> int:
    import anyio

    from .batch.preflight import BatchConfig, BatchError, BatchStopped, load_tools, run_batch

    try:
        tools = load_tools(args.tools) if args.tools else ()
        cfg = BatchConfig(
            input=args.input,
            out=args.out,
            model=args.model,
            assistant=args.assistant,
            rpm=args.rpm,
            tpm=args.tpm,
            max_in_flight=args.max_in_flight,
            timeout=args.timeout,
            tools=tools,
            base_url=args.base_url,
            journal=args.journal,
            summary_json=args.summary_json,
            strict=args.strict,
            fresh=args.fresh,
            grace=args.grace,
            progress=args.progress,
            progress_every=args.progress_every,
            sim=args.sim,
            sim_time_scale=args.sim_time_scale,
            shard=args.shard,
            metrics_port=args.metrics_port,
            redis=args.redis,
            account=args.account,
            on_redis_failure=args.on_redis_failure,
            completion_window=args.completion_window,
        )
        summary = anyio.run(run_batch, cfg)
    except BatchError as exc:
        print(f"runfleet batch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the batch took over Ctrl-C (reading, probing)
        print("runfleet batch: interrupted before any item started", file=sys.stderr)
        return 130
    except BatchStopped as exc:
        print(f"runfleet batch: {exc}", file=sys.stderr)
        return 143
    print(summary.text(), flush=True)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary.data(), indent=2) + "\n")
    if summary.interrupted:
        # 128 + the signal, as a shell reports a process that signal ended: scripts and
        # supervisors tell Ctrl-C (130) from a stop they asked for (SIGTERM: 143).
        terminated = summary.stopped_by == "SIGTERM"
        print(
            f"runfleet batch: {'stopped by SIGTERM' if terminated else 'interrupted'}; "
            f"run the same command again to resume (journal: {summary.journal})",
            file=sys.stderr,
        )
        return 143 if terminated else 130
    return 0 if summary.ok else 1


def _bench(args: argparse.Namespace) -> int:
    import anyio

    from .bench import BenchConfig, BenchError, StrategyRow, run_bench
    from .bench.plot import FRONTIER, plot_bench, plot_frontier, pyplot

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logs.configure(
        verbose=args.verbose, fmt=args.log_format, secrets=[os.environ.get("OPENAI_API_KEY", "")]
    )
    if args.command == "batch":
        return _batch(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "merge":
        try:
            report = merge_outputs(args.out, args.parts, input=args.input)
        except (OSError, ValueError) as exc:
            why = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else exc
            print(f"runfleet merge: {why}", file=sys.stderr)
            return 2
        print(f"runfleet merge: {report.text()}", file=sys.stdout if report.ok else sys.stderr)
        return 0 if report.ok else 1
    if args.command == "sim":
        from .sim.server import run

        try:
            stopped_by = run(
                args.scenario,
                host=args.host,
                port=args.port,
                time_scale=args.time_scale,
                seed=args.seed,
                api_key=args.api_key,
                log_level=args.log_level,
                announce=lambda line: print(line, flush=True),
            )
        except ScenarioError as exc:
            print(f"runfleet sim: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"runfleet sim: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
        return 128 + stopped_by if stopped_by else 0  # a signal the loop's end swallowed
    return 0


if __name__ == "__main__":
    sys.exit(main())
