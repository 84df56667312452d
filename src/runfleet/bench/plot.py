"""Pictures of a bench: requests per minute against the quota, latency CDFs, the frontier.

matplotlib is an optional extra (``pip install 'runfleet[plot]'``): the bench itself never
needs it, so it is imported only when a plot is asked for, and its absence is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import BenchResult, StrategyRow
from .strategy import BenchError

__all__ = ["FRONTIER", "plot_bench", "plot_frontier", "pyplot", "requests_per_minute"]

FRONTIER = (
    "classic:initial=250ms,cap=2s",
    "classic",
    "classic:initial=1s,cap=10s",
    "classic:initial=2s,cap=10s",
    "classic:initial=2s,cap=20s",
    "fleet:latency=500ms",
    "fleet:latency=1s",
    "fleet:latency=2s",
    "fleet",
    "fleet:latency=4s",
)
"""What ``--frontier`` sweeps: the classic loop's first interval and cap, the fleet's latency
target (``fleet`` alone derives it from learned run times)."""


_LEFT = 0.01
_OFF_SCALE = 3.0
"""A quota more than this many times the busiest minute is named, not drawn: drawn, it would
squash every curve into the bottom of the panel."""


def requests_per_minute(per_second: list[int]) -> list[int]:
    """Return, for each second, the requests in the 60 s ending with it (the peak window's
    measure, so the curve's top is the table's peak)."""
    out, total = [], 0
    for i, n in enumerate(per_second):
        total += n - (per_second[i - 60] if i >= 60 else 0)
        out.append(total)
    return out


def pyplot() -> Any:
    """Return matplotlib's pyplot, drawing to files only.

    Raises:
        BenchError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'runfleet[plot]'") from None
    return plt


def _title(result: BenchResult) -> str:
    s = result.settings
    return (
        f"{s['scenario']}, {s['kind']}: {s['runs']} runs, at most {s['in_flight']} in flight, "
        f"quota {s['rpm']:g} RPM"
    )


def _cdf(ax: Any, row: StrategyRow) -> None:
    values = row.latencies
    if not values:
        return
    # Out of all the runs, so a strategy that lost most of them tops out where it stopped.
    n = max(len(values), row.runs)
    # A log axis shows 0.1 s and 10 s apart; a latency of 0 (seen at once) sits at its left.
    xs = [max(v, _LEFT) for v in values]
    ax.step(xs, [(i + 1) / n for i in range(len(xs))], where="post", label=row.strategy)


def plot_bench(result: BenchResult, path: str | Path) -> Any:
    """Draw requests per minute over time (with the quota) and the detection-latency CDFs.

    Returns the saved (and closed) figure, whose axes say what was drawn.

    Raises:
        BenchError: matplotlib is missing, or the file cannot be written.
    """
    plt = pyplot()
    fig, (rate, cdf) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    busiest = 0
    for row in result.rows:
        curve = requests_per_minute(row.timeline)
        busiest = max(busiest, *curve, 0)
        rate.plot(curve, label=row.strategy, linewidth=1.4)
        _cdf(cdf, row)
    _quota(rate, result.settings["rpm"], busiest)
    rate.set(
        xlabel="scenario seconds since the first request",
        ylabel="requests in the last 60 s",
        title="Requests per minute (429s included)",
    )
    cdf.set(
        xlabel="detection latency (scenario s)",
        ylabel="share of runs seen done",
        title="Detection latency CDF",
        xscale="log",
    )
    cdf.xaxis.set_major_formatter(plt.FormatStrFormatter("%g"))
    cdf.set_xlim(left=_LEFT)
    cdf.set_ylim(0, 1.01)
    for ax in (rate, cdf):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(result))
    _save(plt, fig, path)
    return fig


def _quota(ax: Any, quota: float, busiest: int) -> None:
    """Draw the quota as a line when it is near the curves; otherwise scale to what was used."""
    if quota <= _OFF_SCALE * busiest:
        ax.axhline(quota, color="black", linestyle="--", label="quota")
        ax.set_ylim(bottom=0)
        return
    ax.set_ylim(0, max(busiest, 1) * 1.15)
    ax.annotate(
        f"quota {quota:g} RPM, off scale (busiest minute {busiest / quota:.0%} of it)",
        xy=(0.99, 0.98),
        xycoords="axes fraction",
        ha="right",
        va="top",
        fontsize=8,
    )


def plot_frontier(result: BenchResult, path: str | Path) -> None:
    """Plot polls per run against p95 detection latency, one point per setting.

    Raises:
        BenchError: matplotlib is missing, or the file cannot be written.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), constrained_layout=True)
    for family, marker in (("classic", "o"), ("fleet", "s"), ("naive", "^"), ("fixed2s", "v")):
        rows = [
            r
            for r in result.rows
            if r.strategy.split(":")[0] == family and r.p95 and r.polls_per_run is not None
        ]
        if not rows:
            continue
        rows.sort(key=lambda r: r.p95 or 0)
        ax.plot([r.p95 for r in rows], [r.polls_per_run for r in rows], marker=marker, ls="none",
                label=family)  # fmt: skip
        for r in rows:
            ax.annotate(_short(r.strategy), (r.p95, r.polls_per_run), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set(
        xlabel="p95 detection latency (scenario s)",
        ylabel="polls per run",
        title="Polls per run against p95 latency: lower left is better",
    )
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.suptitle(_title(result))
    _save(plt, fig, path)


def _short(label: str) -> str:
    return label.partition(":")[2] or "default"


def _save(plt: Any, fig: Any, path: str | Path) -> None:
    try:
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot write the plot {path}: {exc}") from None
    finally:
        plt.close(fig)
