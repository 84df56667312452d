"""The ``runfleet`` command: argument parsing and exit codes only; the work is in the public API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from .. import logs
from ..batch.shards import merge_outputs
from ..sim.scenario import ScenarioError
from .batch import add_batch_parser, run_batch_command
from .bench import add_bench_parser, run_bench_command
from .values import SCENARIOS, port, positive

__all__ = ["main"]


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
        help=f"{SCENARIOS} (default: ample)",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    sim.add_argument(
        "--port", type=port, default=8787, help="port, 0-65535 (0 picks a free one; default: 8787)"
    )
    sim.add_argument(
        "--time-scale",
        type=positive,
        help="multiply every scenario duration by this (0.1 runs 10x faster)",
    )
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    sim.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    sim.add_argument("--log-level", default="warning", help="uvicorn's log level")
    add_batch_parser(sub)
    merge = sub.add_parser("merge", help="join `batch --shard` outputs, each line once")
    merge.add_argument("out", type=Path, metavar="OUT.jsonl")
    merge.add_argument("parts", type=Path, nargs="+", metavar="SHARD.jsonl")
    merge.add_argument("--input", type=Path, help="the batch's input: report missing lines")
    add_bench_parser(sub)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logs.configure(
        verbose=args.verbose, fmt=args.log_format, secrets=[os.environ.get("OPENAI_API_KEY", "")]
    )
    if args.command == "batch":
        return run_batch_command(args)
    if args.command == "bench":
        return run_bench_command(args)
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
        from ..sim.server import run

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
