"""What a batch reports: the running tally of its output lines, and the summary at the end.

The summary compares the requests the fleet made with what the classic loop (the defaults of
:class:`~runfleet.polling.schedule.Backoff`) would have made for the same items. That figure is an
estimate: it replays the classic schedule over each finished item's observed times and
counts no 429s, which the classic loop meets as soon as the quota is tight.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..polling.schedule import Backoff
from ..results import RunResult
from ..stats import FleetStats, quantile
from .discount import WindowTokens, discount_text
from .records import INVALID, InvalidLine, OutputLine

__all__ = [
    "BatchSummary",
    "Tally",
    "classic_requests",
    "counts",
    "invalid_report",
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


def counts(statuses: Counter[str]) -> dict[str, int]:
    """Split records by status into ok, failed, timed out and invalid (a duplicate is invalid)."""
    ok, timed_out = statuses.get("completed", 0), statuses.get("timed_out", 0)
    invalid = sum(statuses.get(s, 0) for s in INVALID)
    return {
        "ok": ok,
        "failed": sum(statuses.values()) - ok - timed_out - invalid,
        "timed_out": timed_out,
        "invalid": invalid,
    }


@dataclass(slots=True)
class Tally:
    """Running counts of a batch, fed one output record at a time.

    ``statuses`` are this session's records, ``before`` those of the file's items that an
    earlier session finished: the file as it stands is both, and its exit status says so.
    """

    total: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    before: Counter[str] = field(default_factory=Counter)
    recreated: int = 0
    recreated_why: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    detections: list[float] = field(default_factory=list)
    classic: int = 0
    classic_items: int = 0
    fleet_for_classic: int = 0
    window_tokens: WindowTokens = field(default_factory=WindowTokens)  # the whole file's

    def add(self, record: OutputLine, classic: int | None = None) -> None:
        """Count one record written in this session (``classic``: its classic estimate)."""
        self.statuses[record.status] += 1
        self.window_tokens.add(record)
        self.recreated += record.recreated
        if record.recreated:
            self.recreated_why[record.recreated_reason or "-"] += 1
        figures = record.figures
        if figures is not None:
            self.latencies.append(figures.total)
            self.detections.append(figures.detection_latency)
            if classic is not None:
                self.classic += classic
                self.classic_items += 1
                self.fleet_for_classic += figures.requests

    def add_before(self, record: OutputLine) -> None:
        """Count the record of an item an earlier session finished (from the journal)."""
        self.before[record.status] += 1
        self.window_tokens.add(record)

    @property
    def already_done(self) -> int:
        """Items finished by an earlier session."""
        return sum(self.before.values())

    @property
    def ended(self) -> int:
        """Items with an output line written in this session."""
        return sum(self.statuses.values())

    @property
    def done(self) -> int:
        """Items with an output line (this session or before)."""
        return self.already_done + self.ended

    @property
    def whole(self) -> Counter[str]:
        """The file's records by status: this session's and the earlier ones'."""
        return self.before + self.statuses

    @property
    def failed(self) -> int:
        """Items of the file that ended without a result (invalid lines apart)."""
        return self.done - self.whole.get("completed", 0) - self.invalid

    @property
    def invalid(self) -> int:
        """Lines of the file that never became a run."""
        return sum(self.whole.get(s, 0) for s in INVALID)


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
    stopped_by: str | None = None  # the signal that interrupted it (SIGINT, SIGTERM)

    @property
    def ok(self) -> bool:
        """Whether every item of the file has completed (in this session or before)."""
        t = self.tally
        done = t.whole.get("completed", 0) == t.total
        return done and not self.interrupted and not self.handed_back

    def data(self) -> dict[str, Any]:
        """Return the summary as JSON-ready data: ``items`` the whole file, ``this_run`` ours."""
        t, s = self.tally, self.stats
        whole, st = t.whole, t.statuses
        finished = t.ended - counts(st)["invalid"]
        requests = s.requests_total if s else 0
        polls = s.requests.get("retrieve", 0) if s else 0
        return {
            "items": {
                "total": t.total,
                **counts(whole),
                "by_status": dict(sorted(whole.items())),
                "already_done": t.already_done,
                "recreated": t.recreated,
                "recreated_by_reason": dict(sorted(t.recreated_why.items())),
                "handed_back": self.handed_back,
                "not_started": self.not_started,
            },
            "this_run": {
                "ended": t.ended,
                **counts(st),
                "by_status": dict(sorted(st.items())),
            },
            "requests": {
                "total": requests,
                "by_kind": dict(s.requests) if s else {},
                "per_item": round(requests / finished, 2) if finished else None,
                "polls_per_item": round(polls / finished, 2) if finished else None,
                "rate_limited": s.rate_limited if s else 0,
                "peak_per_minute": s.peak_minute if s else 0,
                "peak_per_second": s.peak_second if s else 0,
                "quota_rpm": self.quota_rpm,
                "quota_per_second": round(self.quota_rpm / 60, 2),
            },
            "tokens": _tokens(s, self.wall),
            "discount": t.window_tokens.data(),
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
            "stopped_by": self.stopped_by,
            "journal": self.journal,
        }

    def text(self) -> str:
        """Return the summary as a user reads it, no line wider than 80 columns."""
        d = self.data()
        it, run, rq, lat = d["items"], d["this_run"], d["requests"], d["latency_s"]
        cl, tk = d["classic_estimate"], d["tokens"]

        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        def split(c: dict[str, int]) -> str:
            return (
                f"{c['ok']} ok, {c['failed']} failed, {c['timed_out']} timed out, "
                f"{c['invalid']} invalid"
            )

        kinds = ", ".join(f"{k} {v}" for k, v in rq["by_kind"].items()) or "-"
        lines = [f"items      {it['total']} total: {split(it)}"]
        extras = [
            f"{it[key]} {words}"
            for key, words in (
                ("recreated", "recreated"),
                ("handed_back", "handed back"),
                ("not_started", "not started"),
            )
            if it[key]
        ]
        if it["already_done"] or extras:
            before = f"; {it['already_done']} done before" if it["already_done"] else ""
            lines.append(
                f"this run   {run['ended']} ended: {split(run)}{before}"
                + "".join(f", {e}" for e in extras)
            )
        lines += [
            f"requests   {rq['total']} ({kinds})",
            f"per item   {_num(rq['per_item'])} requests, {_num(rq['polls_per_item'])} polls",
            f"429s       {rq['rate_limited']}"
            + (f" ({tk['rate_limited']} on tokens)" if tk else ""),
            f"peak       {rq['peak_per_minute']} requests/min (quota {rq['quota_rpm']:.0f}); "
            f"busiest second {rq['peak_per_second']} (share {rq['quota_per_second']:g})",
        ]
        if tk:
            limit = "" if tk["limit"] is None else f" of {tk['limit']:.0f}"
            lines.append(
                f"tokens     {tk['used']} used, {tk['per_minute']}/min{limit} on average; "
                f"reserved at most {tk['reserved_peak_per_minute']} in a minute"
            )
        if d["discount"]:
            lines.append(discount_text(d["discount"]))
        lines += [
            f"latency    p50 {sec(lat['p50'])}, p95 {sec(lat['p95'])} "
            f"(noticed late: p50 {sec(lat['detection_p50'])}, p95 {sec(lat['detection_p95'])})",
            f"wall       {d['wall_s']:.1f} s",
        ]
        if cl["items"]:
            saved = 1 - cl["runfleet_requests"] / cl["requests"] if cl["requests"] else 0.0
            lines.append(
                f"classic    ~{cl['requests']} requests (estimate) for these {cl['items']} "
                f"items; {cl['runfleet_requests']} here, {saved:.0%} fewer"
            )
        return "\n".join(part for line in lines for part in _fit(line))


def invalid_report(invalid: Sequence[InvalidLine], out: str, *, cap: int = 20) -> list[str]:
    """Return the stderr lines that name the invalid lines: the first ``cap``, then a count.

    A bad line is a fix the user makes in the input file, so it is said where they look, not
    only in the output file; a file of thousands of bad lines says the first and how many.
    """
    lines = [f"runfleet batch: skipped {bad.message}" for bad in invalid[:cap]]
    if len(invalid) > cap:
        lines.append(
            f"runfleet batch: skipped {len(invalid) - cap} more invalid lines (each is in {out})"
        )
    return lines


_WIDTH, _INDENT = 80, " " * 11


def _tokens(stats: FleetStats | None, wall: float) -> dict[str, Any] | None:
    """The token figures of a batch, or None when it spent none (nothing to report).

    Used tokens are what runs really cost (their ``usage``), against the limit; reservations
    (input estimate plus output reservation, until usage settles them) are what the fleet held
    against the limit to admit requests, apart. A batch shorter than a minute used its tokens
    within one minute: its rate is its total, not the total stretched to a minute.
    """
    t = stats.tokens if stats is not None else None
    if t is None or not t.charged:
        return None
    return {
        "used": t.used,
        "charged": t.charged,
        "given_back": round(t.given_back),
        "per_minute": round(t.used * 60 / max(wall, 60.0)),
        "used_peak_per_minute": round(t.used_peak_window),
        "reserved_peak_per_minute": round(t.peak_window),
        "limit": t.limit,
        "rate_limited": t.rate_limited,
        "too_large": t.too_large,
    }


def _fit(line: str) -> list[str]:
    """Break a summary line wider than 80 columns after a comma, under its figures."""
    parts = []
    while len(line) > _WIDTH:
        cut = max(line.rfind(", ", 0, _WIDTH), line.rfind("; ", 0, _WIDTH))
        if cut <= len(_INDENT):
            cut = line.rfind(" ", len(_INDENT) + 1, _WIDTH + 1) - 1
        if cut <= len(_INDENT):
            break  # one word wider than the line: left whole rather than cut in two
        parts.append(line[: cut + 1])
        line = _INDENT + line[cut + 2 :]
    return [*parts, line]


def _num(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
