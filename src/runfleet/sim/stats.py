"""What the simulator saw, reported out of band so benchmarks judge every client by one clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .lifecycle import Job
from .ratelimit import PeakWindow, TokenWindow

__all__ = ["SimStats", "percentile"]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Return the q-quantile (0..1) by nearest rank, or None for no values."""
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


# Background responses' completion windows, in the order the stats list them.
_WINDOW_ORDER = ("soonest", "2h", "8h")

# The limits a 429 can come from; a storm's are counted apart, as the quota did not cause them.
_LIMIT_KINDS = ("requests", "tokens", "too_large")


class SimStats:
    """Counters of API requests by endpoint and outcome, faults injected and 429s caused."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.rate_limited = 0
        self.limited_by: Counter[str] = Counter()
        self.storm_limited = 0
        self.unauthorized = 0
        self.peak = PeakWindow(60.0)
        self.peak_second = PeakWindow(1.0)  # against a per-second share (rpm / 60)
        self.per_second: Counter[int] = Counter()
        self.limited_per_second: Counter[int] = Counter()
        self.token_limited_per_second: Counter[int] = Counter()
        self.created: Counter[str] = Counter()
        self.followups: Counter[str] = Counter()  # applied follow-ups by previous response
        self.refollowed: Counter[str] = Counter()  # follow-ups beyond the first, by item
        # Requests arrived and not yet answered (or dropped): a test that kills a client must
        # wait for these to settle, as one whose body never fully arrived is never applied.
        self.open = 0

    def record_created(self, item: str) -> None:
        """Count one applied create of a run that names its item (``runfleet_item``)."""
        self.created[item] += 1

    def record_followup(self, item: str, previous: str) -> None:
        """Count one applied tool-round follow-up of ``previous``; a second one is a copy."""
        self.followups[previous] += 1
        if self.followups[previous] > 1:
            self.refollowed[item] += 1

    def record(self, endpoint: str, now: float) -> None:
        """Count one API request as it arrives."""
        self.requests[endpoint] += 1
        self.per_second[int(now)] += 1
        self.peak.record(now)
        self.peak_second.record(now)

    def record_limited(self, now: float, kind: str = "requests") -> None:
        """Count one request answered 429: by the quota (of ``_LIMIT_KINDS``) or by a storm."""
        if kind == "storm":
            self.storm_limited += 1
            return
        self.rate_limited += 1
        self.limited_by[kind] += 1
        self.limited_per_second[int(now)] += 1
        if kind == "tokens":
            self.token_limited_per_second[int(now)] += 1

    def items(self) -> dict[str, Any]:
        """Return the creates counted per item: how many items, and those created more than once.

        A client that marks each create with its item's id (in ``metadata``) can be held to
        "nothing created twice silently": ``repeated`` must match what it says it re-created,
        and ``refollowed`` (items whose tool round was continued twice) too.
        """
        repeated = {item: n for item, n in sorted(self.created.items()) if n > 1}
        return {
            "created": len(self.created),
            "extra_creates": sum(n - 1 for n in repeated.values()),
            "repeated": repeated,
            # A tool round answered twice: two responses with one previous_response_id.
            "extra_followups": sum(self.refollowed.values()),
            "refollowed": dict(sorted(self.refollowed.items())),
        }

    def timeline(self, tokens: Counter[int] | None = None) -> dict[str, list[int]]:
        """Return requests, 429s and tokens per scenario second since the reset, for plots.

        ``rate_limited`` counts every 429 the quota caused; ``token_rate_limited`` those of the
        token limit alone (what "no token 429 after the first minute" is judged by).
        """
        tokens = tokens or Counter()
        end = max([*self.per_second, *self.limited_per_second, *tokens], default=-1) + 1
        return {
            "requests": [self.per_second[s] for s in range(end)],
            "rate_limited": [self.limited_per_second[s] for s in range(end)],
            "token_rate_limited": [self.token_limited_per_second[s] for s in range(end)],
            "tokens": [tokens[s] for s in range(end)],
        }

    def snapshot(
        self,
        now: float,
        *,
        scenario: str,
        time_scale: float,
        rpm: float,
        tokens: TokenWindow,
        responses: Iterable[Job],
        runs: Iterable[Job],
        per_run: bool = False,
        timeline: bool = False,
    ) -> dict[str, Any]:
        """Return every figure as JSON-ready data; times in scenario seconds.

        ``rate_limited`` counts every 429 the quota caused, ``rate_limited_by_type`` splits
        them by limit; ``tokens`` holds the token ledger (see ``TokenWindow.snapshot``).
        """
        kinds = {"responses": list(responses), "runs": list(runs)}
        out: dict[str, Any] = {
            "scenario": scenario,
            "time_scale": time_scale,
            "now": now,
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "open_requests": self.open,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "rate_limited": self.rate_limited,
            "rate_limited_by_type": {kind: self.limited_by[kind] for kind in _LIMIT_KINDS},
            "storm_limited": self.storm_limited,
            "unauthorized": self.unauthorized,
            "faults": dict(sorted(self.faults.items())),
            "peak_window": {"seconds": self.peak.length, "peak": self.peak.peak, "quota": rpm},
            "peak_second": {"peak": self.peak_second.peak, "share": rpm / 60},
            "tokens": tokens.snapshot(now, self.peak.length),
            "items": self.items(),
        }
        if timeline:
            out["timeline"] = self.timeline(tokens.per_second())
        for name, jobs in kinds.items():
            out[name] = _summary(jobs, now)
        # Per completion window: a client that polls an 8h response like a soonest one shows
        # here as retrieves per response orders of magnitude apart at the same latency.
        by_window: dict[str, list[Job]] = {w: [] for w in _WINDOW_ORDER}
        for job in kinds["responses"]:
            if job.window is not None:
                by_window.setdefault(job.window, []).append(job)
        out["responses"]["windows"] = {
            w: _summary(jobs, now) | {"follow_ups": sum(j.prioritized for j in jobs)}
            for w, jobs in by_window.items()
            if jobs
        }
        for name, jobs in kinds.items():
            if per_run:
                out[name]["items"] = [
                    {
                        "id": job.id,
                        "status": job.status_at(now)[0].value,
                        "retrieves": job.retrieves,
                        "latencies": job.latencies,
                        "polled": job.polled,
                        "window": job.window,
                        "seconds": round(job.done_at - job.created, 3),
                    }
                    for job in jobs
                ]
        return out


def _summary(jobs: list[Job], now: float) -> dict[str, Any]:
    """Return the counts, retrieves and detection latencies of a set of jobs."""
    by_status: Counter[str] = Counter(job.status_at(now)[0].value for job in jobs)
    lat = sorted(x for job in jobs for x in job.latencies)
    return {
        "total": len(jobs),
        "by_status": dict(sorted(by_status.items())),
        "retrieves": sum(job.retrieves for job in jobs),
        "detection": {
            "count": len(lat),
            "p50": percentile(lat, 0.5),
            "p95": percentile(lat, 0.95),
            "max": lat[-1] if lat else None,
            "mean": sum(lat) / len(lat) if lat else None,
        },
    }
