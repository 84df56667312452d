"""Prometheus metrics for operators, read from the snapshots the fleet and receiver keep anyway.

Nothing is counted twice: a scrape takes :meth:`Fleet.stats` (and the webhook receiver's
``stats()``) and turns the snapshot into metric families, so the hot path stays the
:class:`~runfleet.stats.StatsCollector`'s plain increments and no counter is sprinkled through
the engine. Names follow Prometheus' conventions: a ``runfleet_`` prefix, ``_total``
counters, ``_seconds`` histograms.

A snapshot reads the event loop's clock and state the loop mutates, so it is taken on the
fleet's loop: a scrape from another thread (``prometheus_client.start_http_server`` serves
from one) hands the snapshot to the loop and waits for it, a scrape on the loop (an ASGI app
mounted beside the webhook receiver) takes it directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .logs import get_logger
from .stats import Buckets, FleetStats

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = [
    "FLEET_FAMILIES",
    "RECEIVER_FAMILIES",
    "LoopCollector",
    "Metrics",
    "expose",
    "fleet_metrics",
    "receiver_metrics",
    "serve_metrics",
]

log = get_logger(__name__)
Metrics = bool | CollectorRegistry
"""What ``Fleet(metrics=...)`` takes: True (the default registry), False, or a registry."""

_SCRAPE_TIMEOUT = 5.0
"""Seconds a scrape from another thread waits for the loop; a loop that busy is the news."""


FLEET_FAMILIES = (
    ("runfleet_runs_in_flight", "gauge"),
    ("runfleet_runs_finished", "counter"),
    ("runfleet_requests", "counter"),
    ("runfleet_rate_limited", "counter"),
    ("runfleet_quota_wait_seconds", "histogram"),
    ("runfleet_detection_latency_seconds", "histogram"),
    ("runfleet_ratelimit_remaining_requests", "gauge"),
    ("runfleet_ratelimit_remaining_tokens", "gauge"),
    ("runfleet_quota_requests_per_minute", "gauge"),
    ("runfleet_quota_tokens_per_minute", "gauge"),
    ("runfleet_requests_last_minute", "gauge"),
    ("runfleet_loop_lag_max_seconds", "gauge"),
)
"""A fleet's families, for the registry's check that no two collectors share a name."""
RECEIVER_FAMILIES = (("runfleet_webhook_events", "counter"),)


class LoopCollector(Collector):
    """A collector whose families are built on the event loop that owns what they read."""

    def __init__(
        self, families: Callable[[], Iterable[Metric]], names: Iterable[tuple[str, str]]
    ) -> None:
        self._families = families
        self._names = tuple(names)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop: it is scraped on the loop it runs in
            self._loop = None

    def describe(self) -> list[Metric]:
        """Name the families without a snapshot (registering reads no clock, no loop)."""
        return [Metric(name, "", kind) for name, kind in self._names]

    def collect(self) -> Iterator[Metric]:
        """Yield the families, taken on the owning loop; nothing once that loop has closed."""
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            yield from self._families()
            return
        if loop.is_closed() or not loop.is_running():
            return

        async def take() -> list[Metric]:
            return list(self._families())

        future = asyncio.run_coroutine_threadsafe(take(), loop)
        try:
            yield from future.result(timeout=_SCRAPE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            log.warning("metrics_scrape_timeout", timeout=_SCRAPE_TIMEOUT)


def expose(
    families: Callable[[], Iterable[Metric]],
    metrics: Metrics,
    names: Iterable[tuple[str, str]] = FLEET_FAMILIES,
) -> None:
    """Register ``families`` in ``metrics`` (True: the default registry; False: nowhere).

    Raises:
        ValueError: the registry holds these metrics already (one fleet per registry: give
            a second fleet its own ``CollectorRegistry``).
    """
    if metrics is False:
        return
    registry = REGISTRY if metrics is True else metrics
    try:
        registry.register(LoopCollector(families, names))
    except ValueError as exc:
        raise ValueError(
            f"{exc}: these metrics are registered already; give each fleet or receiver its "
            "own registry (metrics=CollectorRegistry())"
        ) from None


@contextlib.contextmanager
def serve_metrics(port: int | None) -> Iterator[Metrics]:
    """Serve a new registry on ``http://0.0.0.0:port/metrics`` from a thread while inside;
    yield it for the fleet's ``metrics=`` (False, serving nothing, when ``port`` is None).

    Raises:
        OSError: the port cannot be bound (raised on entering, before anything runs).
    """
    if port is None:
        yield False
        return
    registry = CollectorRegistry()
    server: WSGIServer
    server, _ = start_http_server(port, registry=registry)
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()


def _histogram(name: str, doc: str, buckets: Buckets | None) -> Metric:
    family = HistogramMetricFamily(name, doc)
    if buckets is not None:
        pairs = [(f"{b:g}", float(c)) for b, c in zip(buckets.bounds, buckets.counts, strict=False)]
        family.add_metric([], [*pairs, ("+Inf", float(buckets.counts[-1]))], buckets.total)
    return family


def _gauge(name: str, doc: str, value: float | None) -> Metric:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


def fleet_metrics(snapshot: Callable[[], FleetStats]) -> Callable[[], Iterable[Metric]]:
    """Return the builder of a fleet's metric families from its ``stats()``."""

    def families() -> Iterator[Metric]:
        s = snapshot()
        in_flight = GaugeMetricFamily(
            "runfleet_runs_in_flight", "Runs tracked now, by state.", labels=["state"]
        )
        for state, n in s.in_flight.items():
            in_flight.add_metric([state], n)
        yield in_flight
        finished = CounterMetricFamily(
            "runfleet_runs_finished", "Runs ended, by outcome.", labels=["outcome"]
        )
        for how, n in s.finished.items():
            finished.add_metric([how], n)
        yield finished
        requests = CounterMetricFamily(
            "runfleet_requests",
            "HTTP requests sent, by kind and outcome.",
            labels=["kind", "outcome"],
        )
        for kind, outcomes in s.by_kind_outcome.items():
            for outcome, n in outcomes.items():
                requests.add_metric([kind, outcome], n)
        yield requests
        tokens = s.tokens
        limited = CounterMetricFamily(
            "runfleet_rate_limited", "429 answers, by the limit they hit.", labels=["type"]
        )
        limited.add_metric(["requests"], s.quota.rate_limited)
        limited.add_metric(["tokens"], tokens.rate_limited if tokens is not None else 0)
        yield limited
        yield _histogram(
            "runfleet_quota_wait_seconds", "Time requests waited for the quota.", s.quota_wait
        )
        yield _histogram(
            "runfleet_detection_latency_seconds",
            "From a run's state change to the fleet seeing it (upper bound), per run.",
            s.detection,
        )
        yield from _limits(s, tokens)

    return families


def _limits(s: FleetStats, tokens: Any) -> Iterator[Metric]:
    yield _gauge(
        "runfleet_ratelimit_remaining_requests",
        "x-ratelimit-remaining-requests as the server last sent it.",
        s.quota.server_remaining,
    )
    yield _gauge(
        "runfleet_ratelimit_remaining_tokens",
        "x-ratelimit-remaining-tokens as the server last sent it.",
        tokens.server_remaining if tokens is not None else None,
    )
    yield _gauge(
        "runfleet_quota_requests_per_minute", "The request limit in force.", s.quota.effective_rpm
    )
    yield _gauge("runfleet_quota_tokens_per_minute", "The token limit in force.", s.token_limit)
    yield _gauge(
        "runfleet_requests_last_minute", "Requests sent in the last 60 s.", s.requests_last_minute
    )
    yield _gauge(
        "runfleet_loop_lag_max_seconds", "The longest the event loop was held.", s.loop_lag_max
    )


def receiver_metrics(snapshot: Callable[[], Any]) -> Callable[[], Iterable[Metric]]:
    """Return the builder of a webhook receiver's families from its ``stats()``."""

    def families() -> Iterator[Metric]:
        events = CounterMetricFamily(
            "runfleet_webhook_events",
            "Webhook requests, by event type and result (a verification failure's reason, "
            "or what the verified event did: woke, relayed, unknown, duplicate).",
            labels=["type", "result"],
        )
        for kind, results in snapshot().events.items():
            for result, n in results.items():
                events.add_metric([kind, result], n)
        yield events

    return families
