"""The command line's value types: a bad value is refused by argparse in one line, exit 2."""

from __future__ import annotations

import argparse
import math

from ..batch.shards import Shard
from ..sim.scenario import BUILTIN_SCENARIOS

__all__ = ["SCENARIOS", "port", "positive", "shard_spec"]

SCENARIOS = f"a built-in ({', '.join(BUILTIN_SCENARIOS)}) or a JSON file"
"""How every command that starts a simulator names its scenario."""


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    if not math.isfinite(value):  # an infinite time scale or limit never ends, it hangs
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def port(text: str) -> int:
    """Refuse a port the socket would refuse, as argparse refuses any bad value (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text}")
    return value


def shard_spec(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
