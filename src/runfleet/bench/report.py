"""One row per strategy, judged by the simulator's record, and the table that compares them.

Every figure but the outcome counts and the wall time comes from ``/_sim/stats``, so every
strategy is measured by the same clock and the same counters, whatever it believes it did.
The words are DESIGN.md's: requests per run divide every request (429s included) by the runs
whose end the strategy saw; polls are retrieve requests; detection latency runs from the
moment a run needed the client to the retrieve that saw it; the peak window is the most
requests in any 60 s, against the quota.

Tokens, where the account limits them: tokens used (what runs really cost, the simulator's
charge minus its refunds), token 429s (all, and after the first minute, once a client had time
to learn), the token peak (the most tokens used in any 60 s, by when each was admitted) against
the limit, and token utilisation: tokens used per minute over the limit, from the first
admission that cost tokens to the last (while runs were still waiting to start).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .strategy import BenchError
from .workload import Outcome

__all__ = ["RATIO_FIELDS", "BenchResult", "StrategyRow", "row_from_stats"]

_RETRIEVES = ("responses.retrieve", "runs.retrieve")
RATIO_FIELDS = (
    "requests_per_run",
    "polls_per_run",
    "quota_errors",
    "peak_window",
    "p50",
    "p95",
    "max",
    "wall",
)
"""The figures shown as a ratio to ``classic`` (lower is better for each)."""


@dataclass(frozen=True, slots=True)
class StrategyRow:
    """What one strategy cost and how late it noticed, for one workload."""

    strategy: str
    runs: int
    ok: int
    failed: int
    lost: int
    requests: int
    requests_per_run: float | None
    """``None`` when no run was seen to its end: there is nothing to divide by."""
    polls: int
    polls_per_run: float | None
    quota_errors: int
    """429s the account's quota answered (storms included)."""
    peak_window: int
    quota: float
    """The account's requests per minute."""
    p50: float | None
    p95: float | None
    max: float | None
    """Detection latency in scenario seconds, from the simulator's record."""
    wall: float
    """Real seconds from the first request to the last run's end."""
    latencies: list[float] = field(default_factory=list, repr=False)
    timeline: list[int] = field(default_factory=list, repr=False)
    """Requests per scenario second, 429s included, for the plot."""
    retrieves: list[int] = field(default_factory=list, repr=False)
    """Retrieves of each run (each response of a tool chain apart) in the order they were
    created, to see where the polls went: a warm-up, a steady state."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    tokens_used: int = 0
    token_429s: int = 0
    token_429s_late: int = 0
    """Token 429s after the first minute."""
    token_peak: int = 0
    token_limit: float | None = None
    """The account's tokens per minute; None when tokens are not limited."""
    token_utilisation: float | None = None
    token_timeline: list[int] = field(default_factory=list, repr=False)
    """Tokens used per scenario second, by admission."""

    @property
    def over_quota(self) -> bool:
        """Whether some 60 s window held more requests than the quota allows."""
        return self.peak_window > self.quota


def row_from_stats(
    label: str,
    kind: str,
    outcomes: Sequence[Outcome],
    stats: dict[str, Any],
    wall: float,
    extra: dict[str, Any] | None = None,
) -> StrategyRow:
    """Build a row from the outcomes a strategy reported and the simulator's stats."""
    store = stats["responses" if kind == "responses" else "runs"]
    done = sum(o != "lost" for o in outcomes)
    polls = sum(stats["requests"].get(name, 0) for name in _RETRIEVES)
    det = store["detection"]
    latencies = sorted(x for item in store.get("items", ()) for x in item["latencies"])
    tokens, timeline = stats["tokens"], stats.get("timeline", {})
    per_second = list(timeline.get("tokens", []))
    return StrategyRow(
        strategy=label,
        runs=len(outcomes),
        ok=outcomes.count("ok"),
        failed=outcomes.count("failed"),
        lost=outcomes.count("lost"),
        requests=stats["requests_total"],
        requests_per_run=stats["requests_total"] / done if done else None,
        polls=polls,
        polls_per_run=polls / done if done else None,
        quota_errors=stats["rate_limited"] + stats["storm_limited"],
        peak_window=stats["peak_window"]["peak"],
        quota=stats["peak_window"]["quota"],
        p50=det["p50"],
        p95=det["p95"],
        max=det["max"],
        wall=wall,
        latencies=latencies,
        timeline=list(stats.get("timeline", {}).get("requests", [])),
        retrieves=[item["retrieves"] for item in store.get("items", ())],
        extra=dict(extra or {}),
        tokens_used=tokens["used"],
        token_429s=stats["rate_limited_by_type"]["tokens"],
        token_429s_late=sum(timeline.get("token_rate_limited", [])[60:]),
        token_peak=tokens["peak_window"]["peak"],
        token_limit=tokens["limit"],
        token_utilisation=_utilisation(per_second, tokens["limit"]),
        token_timeline=per_second,
    )


def _utilisation(per_second: Sequence[int], limit: float | None) -> float | None:
    """Tokens used per minute over ``limit``, between the first and last second that took any."""
    spent = [s for s, tokens in enumerate(per_second) if tokens]
    if limit is None or not spent:
        return None
    span = spent[-1] - spent[0] + 1
    return sum(per_second[spent[0] : spent[-1] + 1]) / (limit * span / 60)


@dataclass(frozen=True, slots=True)
class BenchResult:
    """A whole bench: what ran, where, and one row per strategy in the order they ran."""

    settings: dict[str, Any]
    rows: list[StrategyRow]

    def baseline(self) -> StrategyRow | None:
        """Return the plain ``classic`` row every ratio is relative to, if it ran."""
        return next((r for r in self.rows if r.strategy == "classic"), None)

    def ratios(self, row: StrategyRow) -> dict[str, float | None]:
        """Return ``row``'s figures divided by ``classic``'s (``None`` where undefined)."""
        base = self.baseline()
        out: dict[str, float | None] = {}
        for name in RATIO_FIELDS:
            mine, theirs = getattr(row, name), None if base is None else getattr(base, name)
            if mine is None or theirs is None:
                out[name] = None
            elif theirs == 0:
                out[name] = 1.0 if mine == 0 else None
            else:
                out[name] = mine / theirs
        return out

    def data(self) -> dict[str, Any]:
        """Return everything as JSON-ready data: settings, rows with ratios, time series."""
        rows = []
        for row in self.rows:
            item = asdict(row)
            item["ratios"] = self.ratios(row)
            rows.append(item)
        return {"settings": self.settings, "rows": rows}

    def heading(self) -> str:
        """Return one line saying what ran where, to print above the table."""
        s, m = self.settings, self.settings["machine"]
        return (
            f"{s['scenario']} scenario, {s['kind']}: {s['runs']} runs per strategy, at most "
            f"{s['in_flight']} in flight, quota {s['rpm']:g} RPM"
            + (f" and {s['tpm']:g} TPM" if s.get("tpm") else "")
            + f" (window {s['quota_window']:g} s), "
            f"time scale {s['time_scale']:g}; {m['cores']} cores, {m['cpu']}, Python "
            f"{m['python']}, openai {m['openai']}. Latencies in scenario seconds; (x) = ratio "
            "to classic."
        )

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`data` to ``path``.

        Raises:
            BenchError: the file cannot be written.
        """
        try:
            Path(path).write_text(json.dumps(self.data(), indent=1) + "\n")
        except OSError as exc:
            raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None

    def table(self) -> str:
        """Return a Markdown table, each figure followed by its ratio to ``classic``."""
        head = (
            "| strategy | ok / failed / lost | requests/run | polls/run | 429s "
            "| peak 60 s window / quota | detection p50 | p95 | max (s) | wall (s) |"
        )
        tokens = any(row.token_limit is not None for row in self.rows)
        if tokens:
            head += (
                " tokens used | token 429s (after 1st min) | token peak 60 s / limit "
                "| token utilisation |"
            )
        lines = [head, "|---" * (14 if tokens else 10) + "|"]
        for row in self.rows:
            r = self.ratios(row)
            lost = f"**{row.lost}**" if row.lost else "0"
            peak = f"{row.peak_window} / {row.quota:g}" + (" **over**" if row.over_quota else "")
            lines.append(
                f"| {row.strategy} | {row.ok} / {row.failed} / {lost} "
                f"| {_fig(row.requests_per_run, r['requests_per_run'])} "
                f"| {_fig(row.polls_per_run, r['polls_per_run'])} "
                f"| {_fig(row.quota_errors, r['quota_errors'], '{:d}')} "
                f"| {peak} "
                f"| {_fig(row.p50, r['p50'])} | {_fig(row.p95, r['p95'])} "
                f"| {_fig(row.max, r['max'], '{:.1f}')} "
                f"| {_fig(row.wall, r['wall'], '{:.0f}')} |" + (_token_cells(row) if tokens else "")
            )
        return "\n".join(lines)


def _token_cells(row: StrategyRow) -> str:
    """The token columns of a row: used, 429s, peak against the limit, utilisation."""
    limit = row.token_limit
    over = limit is not None and row.token_peak > limit
    peak = f"{row.token_peak} / {'-' if limit is None else f'{limit:g}'}"
    use = "-" if row.token_utilisation is None else f"{row.token_utilisation:.0%}"
    return (
        f" {row.tokens_used} | {row.token_429s} ({row.token_429s_late}) "
        f"| {peak}{' **over**' if over else ''} | {use} |"
    )


def _fig(value: float | None, ratio: float | None, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "-"
    text = fmt.format(value)
    return text if ratio is None else f"{text} ({ratio:.2f}x)"
