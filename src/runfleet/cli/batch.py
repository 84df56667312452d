"""``runfleet batch``: its options, and the exit codes of a batch."""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import sys
from pathlib import Path
from typing import Any

from .values import SCENARIOS, port, positive, shard_spec

__all__ = ["add_batch_parser", "run_batch_command"]


def add_batch_parser(sub: Any) -> None:
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
        type=positive,
        help="requests per minute never to exceed (default: the server's "
        "x-ratelimit-limit-requests, read from one request before starting)",
    )
    batch.add_argument(
        "--tpm",
        type=positive,
        help="tokens per minute never to exceed (default: the server's "
        "x-ratelimit-limit-tokens, learned from its answers)",
    )
    batch.add_argument(
        "--max-in-flight", type=int, default=200, help="runs alive at once (default: 200)"
    )
    batch.add_argument(
        "--timeout",
        type=positive,
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
        help=f"start the built-in simulator in-process ({SCENARIOS}) and run against it; no key "
        "needed",
    )
    batch.add_argument(
        "--sim-time-scale",
        type=positive,
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
        type=positive,
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
    batch.add_argument("--shard", type=shard_spec, metavar="K/N", help="K of N: OUT.KofN.jsonl")
    batch.add_argument("--metrics-port", type=port, help="serve Prometheus metrics on it")
    batch.add_argument(
        "--progress-every",
        type=positive,
        default=10.0,
        help="seconds between progress lines when not on a terminal (default: 10)",
    )


def run_batch_command(args: argparse.Namespace) -> int:
    import anyio

    # After SIGTERM the exit is on a supervisor's clock. The interpreter's teardown collects
    # the ~200,000 objects the SDK's import made, several times: ~1 s on an idle 2-core
    # machine, several under load (tests/reliability/test_sigterm_in_flight.py). Frozen just
    # before it, they are left to the OS: the batch's files are closed by then.
    atexit.register(gc.freeze)

    from ..batch.preflight import BatchConfig, BatchError, BatchStopped, load_tools, run_batch

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
