"""What a batch reports: the running tally of its output lines, and the summary at the end.

The summary compares the requests the fleet made with what the classic loop (the defaults of
:class:`~runfleet.polling.schedule.Backoff`) would have made for the same items. That figure is an
estimate: it replays the classic schedule over each finished item's observed times and
counts no 429s, which the classic loop meets as soon as the quota is tight.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..polling.schedule import Backoff
from ..results import RunResult
from ..stats import FleetStats, quantile
from .records import OutputLine

__all__ = [
    "BatchSummary",
    "Tally",
    "classic_requests",
    "server_seconds",
]


def server_seconds(result: RunResult) -> float | None:
    """Return how long the final run took by the server's own timestamps (whole seconds)."""
    created = getattr(result.raw, "created_at", None)
    completed = getattr(result.raw, "completed_at", None)
    if not isinstance(created, int | float) or not isinstance(completed, int | float):
        return None
    return max(0.0, float(completed) - float(created))


def classic_requests(result: RunResult, scale: float = 1.0) -> int:
    """Estimate the requests the classic loop would have spent on one completed run.

    The run's time comes from the server's timestamps (``created_at`` to ``completed_at``,
    in the server's own seconds, so a scaled simulator needs no scaling here), else from
    what the fleet saw (scaled back by ``scale``). Then one create, the polls each phase
    would take (the loop restarts after each tool round; every phase is taken to last as
    long as the last one), one submission per round, and an Assistants run's reply fetch.
    """
    rounds = len(result.tool_rounds)
    phases = rounds + 1
    seconds = server_seconds(result)
    if seconds is None:
        seconds = result.figures.total / scale / phases
    polls = phases * Backoff().polls_for(seconds)
    return 1 + polls + rounds + (result.kind == "assistants")


_CLASSIC = f"{Backoff().initial:g} s x{Backoff().factor:g}, cap {Backoff().cap:g} s"


def _quantile(values: list[float], q: float) -> float | None:
    return quantile(sorted(values), q) if values else None


@dataclass(slots=True)
class Tally:
    """Running counts of a batch, fed one output record at a time."""

    total: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    already_done: int = 0
    recreated: int = 0
    latencies: list[float] = field(default_factory=list)
    detections: list[float] = field(default_factory=list)
    classic: int = 0
    classic_items: int = 0
    fleet_for_classic: int = 0
    peak_rpm: int = 0

    def add(self, record: OutputLine, classic: int | None = None) -> None:
        """Count one record written in this session (``classic``: its classic estimate)."""
        self.statuses[record.status] += 1
        self.recreated += record.recreated
        figures = record.figures
        if figures is not None:
            self.latencies.append(figures.total)
            self.detections.append(figures.detection_latency)
            if classic is not None:
                self.classic += classic
                self.classic_items += 1
                self.fleet_for_classic += figures.requests

    @property
    def done(self) -> int:
        """Items with an output line (this session or before)."""
        return self.already_done + sum(self.statuses.values())

    @property
    def failed(self) -> int:
        """Items of this session that ended without a result (invalid lines included)."""
        return sum(n for s, n in self.statuses.items() if s != "completed")


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """The figures of one batch session; ``data()`` is what ``--summary-json`` writes."""

    tally: Tally
    stats: FleetStats | None
    quota_rpm: float
    wall: float
    handed_back: int
    not_started: int
    interrupted: bool
    journal: str
    time_scale: float = 1.0

    @property
    def ok(self) -> bool:
        """Whether every item ended completed."""
        t = self.tally
        return not self.interrupted and t.failed == 0 and not self.handed_back

    def data(self) -> dict[str, Any]:
        """Return the summary as JSON-ready data."""
        t, s = self.tally, self.stats
        st = t.statuses
        finished = sum(st.values()) - st.get("invalid", 0)
        requests = s.requests_total if s else 0
        polls = s.requests.get("retrieve", 0) if s else 0
        return {
            "items": {
                "total": t.total,
                "ok": st.get("completed", 0),
                "failed": t.failed - st.get("timed_out", 0) - st.get("invalid", 0),
                "timed_out": st.get("timed_out", 0),
                "invalid": st.get("invalid", 0),
                "by_status": dict(sorted(st.items())),
                "already_done": t.already_done,
                "recreated": t.recreated,
                "handed_back": self.handed_back,
                "not_started": self.not_started,
            },
            "requests": {
                "total": requests,
                "by_kind": dict(s.requests) if s else {},
                "per_item": round(requests / finished, 2) if finished else None,
                "polls_per_item": round(polls / finished, 2) if finished else None,
                "rate_limited": s.rate_limited if s else 0,
                "peak_per_minute": t.peak_rpm,
                "quota_rpm": self.quota_rpm,
            },
            "latency_s": {
                "p50": _quantile(t.latencies, 0.5),
                "p95": _quantile(t.latencies, 0.95),
                "detection_p50": _quantile(t.detections, 0.5),
                "detection_p95": _quantile(t.detections, 0.95),
            },
            "classic_estimate": {
                "items": t.classic_items,
                "requests": t.classic,
                "runfleet_requests": t.fleet_for_classic,
                "note": f"estimate: the classic schedule ({_CLASSIC}) replayed over each "
                "completed run's time by the server's timestamps, no 429s counted",
            },
            "wall_s": round(self.wall, 2),
            "interrupted": self.interrupted,
            "journal": self.journal,
        }

    def text(self) -> str:
        """Return the summary as a user reads it."""
        d = self.data()
        it, rq, lat, cl = d["items"], d["requests"], d["latency_s"], d["classic_estimate"]

        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        kinds = ", ".join(f"{k} {v}" for k, v in rq["by_kind"].items()) or "-"
        lines = [
            f"items      {it['total']} total: {it['ok']} ok, {it['failed']} failed, "
            f"{it['timed_out']} timed out, {it['invalid']} invalid"
            + (f", {it['already_done']} done before" if it["already_done"] else "")
            + (f", {it['recreated']} recreated" if it["recreated"] else "")
            + (f", {it['handed_back']} handed back" if it["handed_back"] else "")
            + (f", {it['not_started']} not started" if it["not_started"] else ""),
            f"requests   {rq['total']} ({kinds})",
            f"per item   {_num(rq['per_item'])} requests, {_num(rq['polls_per_item'])} polls",
            f"429s       {rq['rate_limited']}",
            f"peak       {rq['peak_per_minute']} requests/min (quota {rq['quota_rpm']:.0f})",
            f"latency    p50 {sec(lat['p50'])}, p95 {sec(lat['p95'])} "
            f"(noticed late: p50 {sec(lat['detection_p50'])}, p95 {sec(lat['detection_p95'])})",
            f"wall       {d['wall_s']:.1f} s",
        ]
        if cl["items"]:
            saved = 1 - cl["runfleet_requests"] / cl["requests"] if cl["requests"] else 0.0
            lines.append(
                f"classic    ~{cl['requests']} requests for the same {cl['items']} items "
                f"(estimate) vs {cl['runfleet_requests']} here: {saved:.0%} fewer"
            )
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
