"""The grid: does the fleet's polling hold on run-time shapes other than the simulator's own?

Each cell is a simulator scenario whose runs are queued ~0.5 s (lognormal, sigma 0.5, reported
apart from the run as the API reports it) and then run for a time drawn from the cell's shape:

- lognormal with median 1, 4, 15 or 60 s and sigma 0.3, 0.6 or 1.2 (twelve cells);
- ``bimodal``: 70 % fast (median 4 s) and 30 % ten times slower (40 s), sigma 0.5 each;
- ``drift``: median 4 s, sigma 0.6, and every run created after the first half takes twice as
  long (the median doubles halfway).

On each cell, 500 background responses through ``classic``, ``fixed2s``, ``fleet`` and the
fleet with a latency target (half the median, at most 2 s) against a fresh simulator, as
``runfleet bench`` measures them, and the **oracle**: the fewest polls per run of any schedule
``first + k * gap`` that knows the cell's distribution exactly and keeps the same p95 detection
latency as the fleet measured, with no network time (``benchmarks/poll_bound.py``'s search,
scaled to the cell). For ``drift`` the oracle knows the change too: one schedule per half, each
at that p95. ``bound`` is the most any polling can save on the cell: one create plus the
oracle's polls at the classic loop's p95, over the classic loop's requests per run; where it is
above 0.5 no schedule gets half the classic loop's requests at its latency. ``form`` is the
fewest polls of the learned schedule's own form (a first poll one gap after the 2 % point,
jittered gaps) that knows the distribution, at the fleet's p95: over the oracle's, what keeping
the lower tail in sight costs. ``design`` adds the first ``min_samples`` runs on the classic
loop: the fewest polls the fleet's design allows, knowing the cell; ``fleet/design`` is what
learning online costs on top.

Long cells run time-scaled (a run's mean near 1.5 real seconds, the scale at least 0.25) so
the grid fits in ``make bench``; network and CPU time are then magnified by the same factor,
which counts against the fleet and the loops alike. ``fixed2s`` sends 50 requests per scenario
second with 100 runs in flight, 200 a real second at a quarter scale: more than one process
sends, so its latency on the long cells is partly the bench's own CPU. Writes ``grid.md`` (the
table), ``grid.json`` and ``grid.png`` (heat maps; matplotlib, ``pip install 'runfleet[plot]'``)
into ``--out``.

    .venv/bin/python benchmarks/grid.py [--runs 500] [--cells m4-s0.6,bimodal] [--out docs/bench]
    .venv/bin/python benchmarks/grid.py --render   # table and plot again from grid.json
    .venv/bin/python benchmarks/grid.py --append --cells bimodal   # into the same grid.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean as mean
from typing import Any

import numpy as np

from poll_bound import evenly, fleet_form
from runfleet.bench.race import race
from runfleet.bench.runner import BenchConfig, run_bench
from runfleet.polling.policy import PollPolicy

QUEUED = {"dist": "lognormal", "median": 0.5, "sigma": 0.5}
MEDIANS = (1.0, 4.0, 15.0, 60.0)
SIGMAS = (0.3, 0.6, 1.2)
STRATEGIES = ("classic", "fixed2s", "fleet", "fleet:latency")


@dataclass(frozen=True, slots=True)
class Cell:
    """One run-time shape: its name, its ``in_progress`` distribution, a drift if any."""

    name: str
    work: dict[str, Any]
    median: float
    drift_after: int | None = None

    def scenario(self, runs: int) -> dict[str, Any]:
        lifecycle: dict[str, Any] = {"queued": QUEUED, "in_progress": self.work}
        if self.drift_after is not None:
            lifecycle |= {"drift_after": self.drift_after, "drift_factor": 2.0}
        return {
            "name": f"grid-{self.name}",
            "seed": 17,
            "lifecycle": lifecycle,
            "outcomes": {"failed": 0.0, "incomplete": 0.0},
            "quota": {"rpm": 30000},
        }

    def halves(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        """Draw run times (queued + working) as the simulator would, per half for a drift."""
        queued = rng.lognormal(np.log(0.5), 0.5, n)
        work = _draw(self.work, rng, n)
        if self.drift_after is None:
            return [queued + work]
        return [queued + work, queued + 2.0 * work]


def _draw(work: dict[str, Any], rng: np.random.Generator, n: int) -> np.ndarray:
    if work["dist"] == "lognormal":
        return np.asarray(rng.lognormal(np.log(work["median"]), work["sigma"], n))
    picks = rng.choice(len(work["parts"]), size=n, p=np.asarray(work["weights"]))
    out = np.empty(n)
    for i, part in enumerate(work["parts"]):
        chosen = picks == i
        out[chosen] = _draw(part, rng, int(chosen.sum()))
    return out


def cells(runs: int) -> list[Cell]:
    """Return the grid's cells in the table's order."""
    out = [
        Cell(f"m{m:g}-s{s:g}", {"dist": "lognormal", "median": m, "sigma": s}, m)
        for m in MEDIANS
        for s in SIGMAS
    ]
    fast = {"dist": "lognormal", "median": 4.0, "sigma": 0.5}
    slow = {"dist": "lognormal", "median": 40.0, "sigma": 0.5}
    mix = {"dist": "mixture", "parts": [fast, slow], "weights": [0.7, 0.3]}
    out.append(Cell("bimodal", mix, 4.0))
    drift = {"dist": "lognormal", "median": 4.0, "sigma": 0.6}
    out.append(Cell("drift", drift, 4.0, drift_after=runs // 2))
    return out


def oracle(times: np.ndarray, latency: float) -> float:
    """The fewest mean polls of any ``first + k * gap`` with p95 latency at most ``latency``."""
    firsts = np.quantile(times, np.linspace(0.0, 0.9, 37))
    gaps = latency * np.linspace(0.5, 4.0, 36)
    best = math.inf
    for first in firsts:
        for gap in gaps:
            polls, p95 = evenly(times, float(first), float(gap))
            if p95 <= latency and polls < best:
                best = polls
    return best


def oracle_polls(cell: Cell, latency: float | None, seed: int = 0) -> float | None:
    """The oracle at ``latency``: each half of a drift on its own schedule, mean of both."""
    if latency is None or latency <= 0:
        return None
    halves = cell.halves(np.random.default_rng(seed), 20_000)
    return float(np.mean([oracle(times, latency) for times in halves]))


def form_polls(cell: Cell, latency: float | None, seed: int = 0) -> float | None:
    """The fewest polls of the fleet's form at p95 ``latency`` (``poll_bound.fleet_form``: a
    first poll one gap after the point where 2 % of runs are done, then every gap, jittered;
    the backing-off tail left out), knowing the distribution. That first poll keeps the lower
    tail in sight where the oracle's skips it: this prices the choice."""
    if latency is None or latency <= 0:
        return None
    best = []
    for times in cell.halves(np.random.default_rng(seed), 20_000):
        rng = np.random.default_rng(seed + 1)
        found = math.inf
        for gap in latency * np.linspace(0.5, 3.0, 51):
            polls, p95 = fleet_form(times, rng, PollPolicy().early_share, float(gap))
            if p95 <= latency:
                found = min(found, polls)
        best.append(found)
    return float(np.mean(best))


def _drawer(cell: Cell, runs: int) -> Callable[[random.Random], float]:
    """Draw run times as the simulator does, one run after another (``bench.race``'s form)."""
    made = itertools.count(1)

    def work(spec: dict[str, Any], rng: random.Random) -> float:
        if spec["dist"] == "lognormal":
            return rng.lognormvariate(math.log(spec["median"]), spec["sigma"])
        part = rng.choices(spec["parts"], spec["weights"])[0]
        return work(part, rng)

    def draw(rng: random.Random) -> float:
        drifted = cell.drift_after is not None and next(made) > cell.drift_after
        queued = rng.lognormvariate(math.log(0.5), 0.5)
        return queued + work(cell.work, rng) * (2.0 if drifted else 1.0)

    return draw


def offline(
    cell: Cell, runs: int, seeds: int = 3, policy: PollPolicy | None = None
) -> dict[str, Any]:
    """The learned schedule alone against the classic loop and the oracle, on no network.

    ``bench.race``: runs polled one after another, the model learning online from what its own
    polls saw; no first wave, no scouts, no machine load. Means over ``seeds`` seeds.
    """
    races = [race(_drawer(cell, runs), seed, runs, policy) for seed in range(seeds)]

    def row(polls: float, p95: float) -> dict[str, Any]:
        return {"requests_per_run": 1 + polls, "polls_per_run": polls, "p95": p95, "lost": 0}

    classic = row(mean(r.classic_polls for r in races), mean(r.classic_p95 for r in races))
    fleet = row(mean(r.learned_polls for r in races), mean(r.learned_p95 for r in races))
    judged = _judged(cell, runs, None, 0.0, {"classic": classic, "fleet": fleet})
    judged["comb"] = bool(policy and policy.comb)
    return judged


def time_scale(cell: Cell) -> float:
    """Real seconds per scenario second: a run's mean near 1.5 real seconds, never slower, and
    never below a quarter, where the classic loop's 100 runs polled every 5 s would need more
    requests a second than one process sends (about 3 ms of CPU each here)."""
    mean = float(np.mean(np.concatenate(cell.halves(np.random.default_rng(1), 20_000))))
    return max(0.25, min(1.0, 1.5 / mean))


async def measure(
    cell: Cell, runs: int, folder: Path, scale: float | None = None, comb: bool = False
) -> dict[str, Any]:
    """Run the four strategies on one cell (with ``comb``: the classic loop and
    ``fleet:comb``); return their rows and the oracle's figures."""
    path = folder / f"{cell.name}.json"
    path.write_text(json.dumps(cell.scenario(runs)))
    times = np.concatenate(cell.halves(np.random.default_rng(2), 20_000))
    longest = float(np.quantile(times, 0.9999))
    latency = min(2.0, cell.median / 2)
    specs = [s if s != "fleet:latency" else f"fleet:latency={latency:g}s" for s in STRATEGIES]
    if comb:
        specs = ["classic", "fleet:comb"]
    scale = scale or time_scale(cell)
    cfg = BenchConfig(
        scenario=path,
        runs=runs,
        strategies=",".join(specs),
        time_scale=scale,
        # No loop gives up before the slowest runs end: the classic loop's 60 s would lose
        # the long cells' runs, which is not what the grid measures.
        timeout=max(60.0, 3 * longest),
        limit=max(600.0, 4 * longest),
    )
    started = time.monotonic()
    result = await run_bench(cfg)
    rows = {row.strategy.split(":")[0] + (":latency" if "latency" in row.strategy else ""): row
            for row in result.rows}  # fmt: skip
    wall = time.monotonic() - started
    judged = _judged(cell, runs, scale, wall, {name: asdict(row) for name, row in rows.items()})
    judged["comb"] = comb
    return judged


def _judged(
    cell: Cell, runs: int, scale: float | None, wall: float, rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A cell's figures with the oracle's at the fleet's and at the classic loop's p95."""
    classic, fleet = rows["classic"], rows["fleet"]
    at_fleet = oracle_polls(cell, fleet["p95"])
    at_classic = oracle_polls(cell, classic["p95"])
    form = form_polls(cell, fleet["p95"])
    requests = classic["requests_per_run"]
    return {
        "cell": cell.name,
        "runs": runs,
        "time_scale": scale,
        "wall": wall,
        "rows": rows,
        "oracle_at_fleet_p95": at_fleet,
        "oracle_at_classic_p95": at_classic,
        "form_at_fleet_p95": form,
        "bound": None if at_classic is None or not requests else (1.0 + at_classic) / requests,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def verdict(cell: dict[str, Any]) -> dict[str, float | bool | None]:
    """The cell's three ratios and whether the issue's targets hold on it."""
    rows = cell["rows"]
    c, f = rows["classic"], rows["fleet"]
    requests = _ratio(f["requests_per_run"], c["requests_per_run"])
    p95 = _ratio(f["p95"], c["p95"])
    oracle = _ratio(f["polls_per_run"], cell["oracle_at_fleet_p95"])
    holds = None not in (requests, p95, oracle)
    holds = holds and requests <= 0.5 and p95 <= 1.0 and oracle <= 1.2  # type: ignore[operator]
    return {"requests": requests, "p95": p95, "oracle": oracle, "holds": bool(holds)}


def table(grid: list[dict[str, Any]]) -> str:
    """The README's table: one line per cell."""
    head = (
        "| cell | scale | classic req/run, p95 | fixed2s req/run, p95 | fleet req/run, polls, p95 "
        "| fleet:latency req/run, p95 | oracle polls at fleet p95 | fleet/oracle polls "
        "| fleet/classic req | fleet/classic p95 | bound | design/oracle | fleet/design | holds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for cell in grid:
        r = cell["rows"]
        v = verdict(cell)
        design = design_polls(cell)
        lines.append(
            f"| {cell['cell']} | {_num(cell['time_scale'], '{:.3g}')} | {_pair(r['classic'])} "
            f"| {_pair(r.get('fixed2s'))} | {_num(r['fleet']['requests_per_run'])}, "
            f"{_num(r['fleet']['polls_per_run'])}, {_num(r['fleet']['p95'])} "
            f"| {_pair(r.get('fleet:latency'))} | {_num(cell['oracle_at_fleet_p95'])} "
            f"| {_num(v['oracle'])} | {_num(v['requests'])} | {_num(v['p95'])} "
            f"| {_num(cell['bound'])} | {_num(_ratio(design, cell['oracle_at_fleet_p95']))} "
            f"| {_num(_ratio(r['fleet']['polls_per_run'], design))} "
            f"| {'yes' if v['holds'] else '**no**'} |"
        )
    return "\n".join(lines)


def design_polls(cell: dict[str, Any]) -> float | None:
    """The fewest polls per run the fleet's design allows on a judged cell: its first
    ``min_samples`` runs on the classic loop, then its form knowing the distribution."""
    form, runs = cell.get("form_at_fleet_p95"), cell.get("runs", 500)
    if form is None or cell.get("comb"):  # the comb's form is another
        return None
    first = min(PollPolicy().min_samples, runs)
    classic = cell["rows"]["classic"]["polls_per_run"]
    return float((form * (runs - first) + classic * first) / runs)


def _num(value: float | None, form: str = "{:.2f}") -> str:
    return "-" if value is None else form.format(value)


def _pair(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    lost = f" ({row['lost']} lost)" if row["lost"] else ""
    return f"{_num(row['requests_per_run'])}, {_num(row['p95'])}{lost}"


def plot(grid: list[dict[str, Any]], path: Path) -> None:
    """Two heat maps: fleet polls / oracle's, fleet p95 / classic's; rows are medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {cell["cell"]: verdict(cell) for cell in grid}
    labels = [[f"m{m:g}-s{s:g}" for s in SIGMAS] for m in MEDIANS] + [["bimodal", "drift", ""]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.5))
    for ax, key, title, good in (
        (axes[0], "oracle", "fleet polls/run ÷ oracle's at the fleet's p95", 1.2),
        (axes[1], "p95", "fleet p95 ÷ classic's p95", 1.0),
    ):
        values = np.array([[_cell_value(by_name, n, key) for n in row] for row in labels])
        image = ax.imshow(values, cmap="RdYlGn_r", vmin=0.0, vmax=2 * good)
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(3), [f"sigma {s:g}" for s in SIGMAS])
        ax.set_yticks(range(5), [f"median {m:g} s" for m in MEDIANS] + ["bimodal | drift"])
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _cell_value(by_name: dict[str, dict[str, Any]], name: str, key: str) -> float:
    value = by_name.get(name, {}).get(key)
    return np.nan if value is None else float(value)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument(
        "--cells", default="", help="cell names, in the order to run them (default: all)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--render", action="store_true", help="redraw from --out/grid.json")
    parser.add_argument("--offline", action="store_true", help="the schedule alone (bench.race)")
    parser.add_argument(
        "--comb",
        action="store_true",
        help="the learned schedule as PollPolicy(comb=True); on the simulator only it and classic",
    )
    parser.add_argument("--time-scale", type=float, help="for every cell (default: per cell)")
    parser.add_argument(
        "--append", action="store_true", help="keep --out/grid.json's cells, replacing those run"
    )
    args = parser.parse_args()
    every = {c.name: c for c in cells(args.runs)}
    chosen = [every[n] for n in args.cells.split(",")] if args.cells else list(every.values())
    args.out.mkdir(parents=True, exist_ok=True)
    grid: list[dict[str, Any]] = []
    if args.append and (args.out / "grid.json").exists():
        # Each cell's old row stays until its new one replaces it: a stopped run loses none.
        grid = json.loads((args.out / "grid.json").read_text())
    if args.render:
        grid = json.loads((args.out / "grid.json").read_text())
        chosen = []
        for judged in grid:  # grids measured before the form's column
            if "form_at_fleet_p95" not in judged:
                p95 = judged["rows"]["fleet"]["p95"]
                judged["form_at_fleet_p95"] = form_polls(every[judged["cell"]], p95)
        (args.out / "grid.json").write_text(json.dumps(grid, indent=1))
    with tempfile.TemporaryDirectory() as folder:
        for cell in chosen:
            if args.offline:
                judged = offline(cell, args.runs, policy=PollPolicy(comb=args.comb))
            else:
                judged = await measure(cell, args.runs, Path(folder), args.time_scale, args.comb)
            names = [row["cell"] for row in grid]
            if cell.name in names:
                grid[names.index(cell.name)] = judged
            else:
                grid.append(judged)
            print(f"{cell.name}: {judged['wall']:.0f} s, {verdict(judged)}", file=sys.stderr)
            (args.out / "grid.json").write_text(json.dumps(grid, indent=1))
    text = table(grid)
    (args.out / "grid.md").write_text(text + "\n")
    print(text)
    plot(grid, args.out / "grid.png")


if __name__ == "__main__":
    asyncio.run(main())
