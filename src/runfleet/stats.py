"""What the fleet did: requests by kind and outcome, runs by state, polls and latency per run.

The collector is mutated on the hot path, so it only increments counters and appends to
bounded deques; percentiles are computed when someone asks for a snapshot.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Buckets", "FleetStats", "StatsCollector", "nested", "quantile"]

# Enough finished runs for stable percentiles, few enough that a snapshot (a progress bar
# takes four a second) sorts them in about a millisecond: 100,000 took 12-18 ms. A fleet that
# runs for days reports its recent latency, not its first day's.
_KEEP = 10_000
# Upper bounds (seconds) of the cumulative histograms: from a simulator's tenth of a second to
# the hours a discounted window runs.
_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)
# Heartbeats kept for the loop-lag p95: five minutes at four a second; sorting them for a
# snapshot takes a fraction of a millisecond.
_BEATS = 1_200


@dataclass(frozen=True, slots=True)
class FleetStats:
    """A snapshot of one fleet. Times are seconds; per-run figures cover finished runs.

    Attributes:
        requests: requests sent, by kind (create, retrieve, submit, fetch, cancel).
        outcomes: requests by outcome (ok, rate_limited, server_error, network, ...).
        requests_last_minute: requests sent in the last 60 s of the loop clock.
        rate_limited: 429 answers received.
        in_flight: runs not yet finished, by state.
        finished: runs finished, by how: "completed" or the error's ``outcome`` ("timed_out"...).
        requests_per_run: all requests divided by finished runs.
        polls_per_run: retrieves divided by finished runs.
        detection_p50, detection_p95: per-run detection latency (upper bound) over the latest
            10,000 finished runs, or None.
        quota: the quota's own snapshot.
        loop_lag_max: the longest the event loop was seen unable to run anything else: a
            heartbeat woke that late, or a step of an async tool handler ran that long.
        loop_lag_p95: how late the fleet's heartbeat woke, p95 over its last 1,200 beats
            (five minutes), or None before the first beat.
        tool_blocks: steps of async tool handlers that held the event loop over 0.1 s, by
            tool name (each tool's first is logged as ``tool_blocks_loop``).
        peak_minute, peak_second: the most requests sent in any 60 s and any 1 s of the loop
            clock so far, exact (a window of the last 60 s and 1 s is kept, not sampled).
        ambiguous_creates: creates that may have been applied though no readable answer came
            (sent again and the run marked, or failed as ``AmbiguousCreate``, by policy).
        tokens_last_minute: tokens held against the token limit now: reserved by requests
            sent in the last 60 s (settled to their real usage once known) or still in flight.
        token_limit: the tokens per minute in force (configured or learned), or None.
        tokens: the token budget's own snapshot (``TokenStats``), or None.
        by_kind_outcome: requests by kind, then by outcome (JSON-ready, as the other maps).
        detection: every finished run's detection latency, as a cumulative histogram.
        quota_wait: how long requests waited for the request quota, as a histogram.
    """

    requests: Mapping[str, int]
    outcomes: Mapping[str, int]
    requests_total: int
    requests_last_minute: int
    rate_limited: int
    in_flight: Mapping[str, int]
    finished: Mapping[str, int]
    requests_per_run: float | None
    polls_per_run: float | None
    detection_p50: float | None
    detection_p95: float | None
    tool_rounds: int
    stalled: int
    quota: Any
    loop_lag_max: float = 0.0
    loop_lag_p95: float | None = None
    tool_blocks: Mapping[str, int] = field(default_factory=dict)
    peak_minute: int = 0
    peak_second: int = 0
    ambiguous_creates: int = 0
    tokens_last_minute: float = 0.0
    token_limit: float | None = None
    tokens: Any = None
    by_kind_outcome: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    detection: Buckets | None = None
    quota_wait: Buckets | None = None


@dataclass(frozen=True, slots=True)
class Buckets:
    """A cumulative histogram since the start, in Prometheus' shape: unlike the bounded deques
    behind the percentiles, it forgets nothing, so a scraper can take rates of it.

    Attributes:
        bounds: the buckets' upper bounds (seconds), ascending; ``+Inf`` is implied.
        counts: observations at or under each bound (cumulative), then the total.
        total: the sum of all observations.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float


class _Histogram:
    """Counts per bucket, kept on the hot path at the cost of a bisect."""

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(_BOUNDS, value)] += 1
        self.total += value

    def snapshot(self) -> Buckets:
        return Buckets(_BOUNDS, tuple(itertools.accumulate(self.counts)), self.total)


def quantile(ordered: Sequence[float], q: float, *, upper: bool = False) -> float:
    """Interpolate the ``q`` quantile of sorted, non-empty ``ordered`` (numpy's default method).

    The one quantile of the package: the learned schedule, the stats and the batch summary
    agree on what "p95" means. ``upper`` takes the nearest rank at or above instead (a value
    that was seen, never between two): where erring low costs a 429, as for token headroom.
    """
    if upper:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    if below + 1 >= len(ordered):
        return ordered[-1]
    return ordered[below] + (ordered[below + 1] - ordered[below]) * (position - below)


class StatsCollector:
    """Counters the fleet increments; ``snapshot()`` turns them into a :class:`FleetStats`."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.recent: deque[float] = deque()
        self.this_second: deque[float] = deque()
        self.peak_minute = 0
        self.peak_second = 0
        self.latencies: deque[float] = deque(maxlen=_KEEP)
        self.tool_rounds = 0
        self.stalled = 0
        self.ambiguous_creates = 0
        self.lags: deque[float] = deque(maxlen=_BEATS)
        self.lag_max = 0.0
        self.tool_blocks: Counter[str] = Counter()
        self.by_kind_outcome: Counter[tuple[str, str]] = Counter()
        self.detection = _Histogram()
        self.quota_wait = _Histogram()

    def request_started(self, kind: str, now: float) -> None:
        """Count a request as it leaves (after the quota admitted it), at loop time ``now``."""
        self.requests[str(kind)] += 1
        self.recent.append(now)
        # A window that ends on a request holds the most: checked here, each timestamp leaves
        # its deque once, so the exact peak costs O(1) amortised, not a sort at the end.
        self.this_second.append(now)
        self.peak_minute = max(self.peak_minute, _within(self.recent, now - 60.0))
        self.peak_second = max(self.peak_second, _within(self.this_second, now - 1.0))

    def request_done(self, outcome: str, kind: str = "") -> None:
        """Count how a request (of ``kind``) ended."""
        self.outcomes[str(outcome)] += 1
        self.by_kind_outcome[str(kind), str(outcome)] += 1

    def quota_waited(self, seconds: float) -> None:
        """Record how long a request waited for the request quota to admit it."""
        self.quota_wait.observe(seconds)

    def run_finished(self, how: str, latency: float | None) -> None:
        """Count a finished run and remember its detection latency."""
        self.finished[how] += 1
        if latency is not None:
            self.latencies.append(latency)
            self.detection.observe(latency)

    def loop_lagged(self, lag: float) -> None:
        """Record how late a heartbeat woke: that long, the loop could run nothing else."""
        self.lags.append(lag)
        self.lag_max = max(self.lag_max, lag)

    def tool_blocked(self, tool: str, seconds: float) -> None:
        """Count a step of an async tool handler that held the loop ``seconds``."""
        self.tool_blocks[tool] += 1
        # Measured exactly, where the heartbeat sees a block only from its next due time on.
        self.lag_max = max(self.lag_max, seconds)

    def last_minute(self, now: float) -> int:
        """Return the requests sent in the 60 s before ``now``."""
        return _within(self.recent, now - 60.0)

    def snapshot(
        self, now: float, in_flight: Mapping[str, int], quota: Any, tokens: Any = None
    ) -> FleetStats:
        """Return the figures so far; ``tokens`` is the token budget's snapshot, if any."""
        total = sum(self.requests.values())
        done = sum(self.finished.values())
        lat = sorted(self.latencies)
        lags = sorted(self.lags)
        return FleetStats(
            requests=dict(sorted(self.requests.items())),
            outcomes=dict(sorted(self.outcomes.items())),
            requests_total=total,
            requests_last_minute=self.last_minute(now),
            rate_limited=self.outcomes.get("rate_limited", 0),
            in_flight=dict(sorted(in_flight.items())),
            finished=dict(sorted(self.finished.items())),
            requests_per_run=total / done if done else None,
            polls_per_run=self.requests.get("retrieve", 0) / done if done else None,
            detection_p50=quantile(lat, 0.5) if lat else None,
            detection_p95=quantile(lat, 0.95) if lat else None,
            tool_rounds=self.tool_rounds,
            stalled=self.stalled,
            quota=quota,
            loop_lag_max=self.lag_max,
            loop_lag_p95=quantile(lags, 0.95) if lags else None,
            tool_blocks=dict(sorted(self.tool_blocks.items())),
            peak_minute=self.peak_minute,
            peak_second=self.peak_second,
            ambiguous_creates=self.ambiguous_creates,
            tokens_last_minute=tokens.last_minute if tokens is not None else 0.0,
            token_limit=tokens.limit if tokens is not None else None,
            tokens=tokens,
            by_kind_outcome=nested(self.by_kind_outcome),
            detection=self.detection.snapshot(),
            quota_wait=self.quota_wait.snapshot(),
        )


def nested(pairs: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Return ``{(a, b): n}`` as ``{a: {b: n}}``, sorted (JSON has no tuple keys)."""
    out: dict[str, dict[str, int]] = {}
    for (a, b), n in sorted(pairs.items()):
        out.setdefault(a, {})[b] = n
    return out


def _within(times: deque[float], horizon: float) -> int:
    """Drop the times at or before ``horizon`` from the left of ``times``; count the rest."""
    while times and times[0] <= horizon:
        times.popleft()
    return len(times)
