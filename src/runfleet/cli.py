"""The ``runfleet`` command: argument parsing only; the work is in the public API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .sim.scenario import BUILTIN_SCENARIOS, ScenarioError

__all__ = ["main"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runfleet",
        description="Keep thousands of asynchronous OpenAI runs in flight through one poll loop.",
    )
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
    sim.add_argument("--port", type=int, default=8787, help="port (0 picks a free one)")
    sim.add_argument(
        "--time-scale",
        type=_positive,
        help="multiply every scenario duration by this (0.1 runs 10x faster)",
    )
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    sim.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    sim.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "sim":
        from .sim.server import run

        try:
            run(
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
