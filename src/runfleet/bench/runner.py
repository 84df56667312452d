"""Run the same workload once per strategy against a freshly reset simulator.

The simulator runs in a child process (``runfleet sim``), not in the bench's event loop: in
one loop, requests the client spaced out would reach the simulator's quota bunched behind the
client's own work, and the simulator's CPU would be billed to whichever strategy ran. With
``base_url`` the bench uses a simulator started elsewhere; it must be ``runfleet sim`` (or
serve its ``/_sim`` routes), since every figure comes from the simulator's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from openai import AsyncOpenAI

from ..sim.scenario import Scenario, ScenarioError, load_scenario
from ..sim.server import announced_url, sim_command
from .fleet_run import Reset, run_fleet
from .loops import LOOPS, classic_loop, cookbook_loop, run_loops
from .report import BenchResult, StrategyRow, row_from_stats
from .strategy import BenchError, StrategySpec, classic_backoff, parse_strategies
from .windows import schedule_polls, waited, workload_window
from .workload import Kind, Outcome, Workload

__all__ = ["BenchConfig", "run_bench"]

_API_KEY = "sk-runfleet-bench"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure; durations in scenario seconds."""

    scenario: str | Path = "ample"
    runs: int = 500
    kind: Kind = "responses"
    strategies: str | None = None
    """Comma-separated specs (``naive,classic,fleet:latency=2s``); the kind's defaults when
    ``None``."""
    in_flight: int = 100
    time_scale: float | None = None
    """Real seconds per scenario second; the scenario's own when ``None``."""
    timeout: float = 60.0
    """The timeout of the hand-written loops that have one (``naive``, ``classic``)."""
    limit: float = 600.0
    """The bench's bound on any run of any strategy: unresolved by then, it is lost."""
    seed: int | None = None
    base_url: str | None = None
    completion_window: str | None = None
    """The window every response asks for; the scenario's ``windows.client_window`` when
    ``None`` (``overnight``: ``8h``). With a 2h/8h window, ``timeout`` and ``limit`` are
    stretched to 1.5 windows at least."""

    def check(self) -> tuple[Scenario, tuple[StrategySpec, ...]]:
        """Validate everything before a request is sent; return the scenario and strategies.

        Raises:
            BenchError: naming the bad setting.
        """
        if self.kind not in ("responses", "assistants"):
            raise BenchError(f"kind must be 'responses' or 'assistants', not {self.kind!r}")
        if self.runs < 1:
            raise BenchError(f"--runs must be at least 1, got {self.runs}")
        if self.in_flight < 1:
            raise BenchError(f"--in-flight must be at least 1, got {self.in_flight}")
        for name in ("timeout", "limit"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise BenchError(f"--{name} must be a positive number of seconds, got {value}")
        if self.time_scale is not None and not (
            math.isfinite(self.time_scale) and self.time_scale > 0
        ):
            raise BenchError(f"--time-scale must be a positive number, got {self.time_scale}")
        try:
            scenario = load_scenario(self.scenario)
            changes: dict[str, Any] = {}
            if self.time_scale is not None:
                changes["time_scale"] = self.time_scale
            if self.seed is not None:
                changes["seed"] = self.seed
            scenario = scenario.replace(**changes) if changes else scenario
        except ScenarioError as exc:
            raise BenchError(str(exc)) from None
        workload_window(self.completion_window, scenario, self.kind)
        return scenario, parse_strategies(self.strategies, self.kind)


def machine() -> dict[str, Any]:
    """Describe where the figures were measured: they only hold for such a machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            cpu = m.group(1).strip()
    from openai import __version__ as sdk_version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "openai": sdk_version,
    }


async def run_bench(
    cfg: BenchConfig, *, on_row: Callable[[StrategyRow], None] | None = None
) -> BenchResult:
    """Run every strategy of ``cfg`` in turn; return their rows.

    Raises:
        BenchError: a bad setting (before anything runs), or a simulator that cannot be
            started or reached.
    """
    scenario, specs = cfg.check()
    scale = scenario.time_scale
    window = workload_window(cfg.completion_window, scenario, cfg.kind)
    settings = {
        "scenario": scenario.name,
        "kind": cfg.kind,
        "runs": cfg.runs,
        "in_flight": cfg.in_flight,
        "time_scale": scale,
        "seed": scenario.seed,
        "timeout": waited(cfg.timeout, window),
        "limit": waited(cfg.limit, window),
        "completion_window": window,
        "rpm": scenario.quota.rpm,
        "tpm": scenario.quota.tpm,
        "quota_window": scenario.quota.window,
        "strategies": [s.label for s in specs],
        "machine": machine(),
    }
    rows: list[StrategyRow] = []
    async with _simulator(cfg.base_url) as url, httpx2.AsyncClient(timeout=60) as http:

        async def reset(webhooks: dict[str, Any] | None = None) -> None:
            sc = scenario if webhooks is None else scenario.replace(webhooks=webhooks)
            answer = await http.post(f"{url}/_sim/reset", json={"scenario": sc.model_dump()})
            if answer.status_code != 200:
                raise BenchError(f"the simulator refused the reset: {answer.text[:200]}")

        for spec in specs:
            await reset()
            row = await _measure(cfg, scenario, spec, url, http, reset)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return BenchResult(settings, rows)


async def _measure(
    cfg: BenchConfig,
    scenario: Scenario,
    spec: StrategySpec,
    url: str,
    http: httpx2.AsyncClient,
    reset: Reset,
) -> StrategyRow:
    # A fresh client per strategy: no connection pool or learned state carries over. SDK
    # defaults (two retries) for the hand-written loops; the fleet copies it without them.
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=_API_KEY)
    extra: dict[str, Any] = {}
    window = workload_window(cfg.completion_window, scenario, cfg.kind)
    async with client:
        w = Workload(
            kind=cfg.kind,
            runs=cfg.runs,
            in_flight=cfg.in_flight,
            scale=scenario.time_scale,
            rpm=scenario.quota.rpm,
            timeout=waited(cfg.timeout, window),
            limit=waited(cfg.limit, window),
            client=client,
            poll_after=scenario.poll_after_ms is not None,
            window=window,
            tpm=scenario.quota.tpm,
            prompts=scenario.tokens.prompts,
            chars_per_token=scenario.tokens.rule[1],
            seed=scenario.seed,
        )
        t0 = time.monotonic()
        outcomes: list[Outcome]
        if spec.name == "fleet":
            outcomes = await run_fleet(w, spec, reset, extra)
        elif spec.name == "cookbook":
            outcomes = await run_loops(w, cookbook_loop(w))
        elif spec.name == "classic":
            outcomes = await run_loops(w, classic_loop(classic_backoff(spec)))
        else:
            outcomes = await run_loops(w, LOOPS[spec.name])
        wall = time.monotonic() - t0
    answer = await http.get(f"{url}/_sim/stats", params={"runs": "1", "timeline": "1"})
    answer.raise_for_status()
    stats = answer.json()
    if window is not None and (
        replayed := schedule_polls(spec, stats, len(outcomes) - outcomes.count("lost"))
    ):
        extra["schedule_polls_per_run"] = round(replayed, 1)
    if window is not None and (made := stats["responses"]["total"]):
        # A tool round is a new response that needs its own retrieve once its event says it
        # ended: with webhooks, one poll per response is the floor, not one per run.
        extra["polls_per_response"] = round(stats["responses"]["retrieves"] / made, 2)
        extra["responses"] = made
    return row_from_stats(spec.label, cfg.kind, outcomes, stats, wall, extra)


@contextlib.asynccontextmanager
async def _simulator(base_url: str | None) -> AsyncIterator[str]:
    """Yield the root URL of a simulator: the one at ``base_url``, or a child process."""
    if base_url is not None:
        root = base_url.rstrip("/").removesuffix("/v1")
        try:
            async with httpx2.AsyncClient(timeout=10) as http:
                answer = await http.get(f"{root}/_sim/stats")
        except httpx2.HTTPError as exc:
            raise BenchError(f"cannot reach the simulator at {root}: {exc}") from None
        if answer.status_code != 200:
            raise BenchError(
                f"{root} has no /_sim/stats: the bench needs `runfleet sim`, whose record "
                "judges every strategy by one clock"
            )
        yield root
        return
    cmd = sim_command("--log-level", "error")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        except TimeoutError:
            line = ""
        if (child := announced_url(line)) is None:
            raise BenchError(f"the simulator did not start: {line.strip() or 'no output'}")
        yield child
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
