"""``runfleet bench``: what each polling strategy costs in requests, quota and latency.

Every strategy runs the same workload against a freshly reset simulator with the same seed,
and is judged by the simulator's own record, so the rows of one table compare like with like.
"""

from __future__ import annotations

from .report import BenchResult as BenchResult
from .report import StrategyRow as StrategyRow
from .runner import BenchConfig as BenchConfig
from .runner import run_bench as run_bench
from .strategy import BenchError as BenchError
from .strategy import StrategySpec as StrategySpec
from .strategy import parse_strategies as parse_strategies

__all__ = [
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "StrategyRow",
    "StrategySpec",
    "parse_strategies",
    "run_bench",
]
