"""Prometheus metrics scraped over real HTTP: from a fleet, a webhook receiver and a batch.

The exposition is parsed with ``prometheus_client``'s own parser, so a name, a label or a
histogram that Prometheus would refuse fails here.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from runfleet import Fleet
from runfleet.metrics import FLEET_FAMILIES, RECEIVER_FAMILIES, serve_metrics
from runfleet.sim.server import serve_asgi
from runfleet.webhooks import WebhookReceiver

from .helpers import StartSim, fleet_on, sdk, start
from .redis_server import free_port
from .test_batch_support import batch, finish, on, spawn, write_items

FAST = {"lifecycle": {"queued": 0.2, "in_progress": {"dist": "uniform", "low": 1, "high": 3}}}
SLOW = {"lifecycle": {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 100, "high": 200}}}


Found = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Found:
    """Every sample of an exposition by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[name, frozenset(labels.items())]


async def scrape(port: int) -> str:
    async with httpx2.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    return answer.text


async def test_a_fleet_exposes_its_runs_requests_429s_and_latency(start_sim: StartSim) -> None:
    port = free_port()
    with serve_metrics(port) as registry:
        assert isinstance(registry, CollectorRegistry)
        async with start_sim(FAST) as sim:
            # Ten times the simulator's quota: some requests are refused with 429s.
            rpm = 10 * sim.app.scenario.quota.rpm / sim.app.scenario.time_scale
            async with fleet_on(sim, rpm=rpm, metrics=registry) as fleet:
                handles = [await start(fleet, "responses", str(i)) for i in range(20)]
                for h in handles:
                    await h
                # Scraped from the server's thread while the loop runs: the snapshot hops over.
                found = samples(await scrape(port))
                stats = fleet.stats()
    assert value(found, "runfleet_runs_finished_total", outcome="completed") == 20
    assert value(found, "runfleet_requests_total", kind="create", outcome="ok") == 20
    assert (
        value(found, "runfleet_requests_total", kind="retrieve", outcome="ok")
        == (stats.by_kind_outcome["retrieve"]["ok"])
    )
    assert value(found, "runfleet_rate_limited_total", type="requests") == stats.rate_limited
    assert value(found, "runfleet_rate_limited_total", type="tokens") == 0
    assert value(found, "runfleet_detection_latency_seconds_count") == 20
    assert value(found, "runfleet_detection_latency_seconds_bucket", le="+Inf") == 20
    waits = value(found, "runfleet_quota_wait_seconds_count")
    assert waits == stats.requests_total  # every request passed the quota once
    remaining = value(found, "runfleet_ratelimit_remaining_requests")
    assert remaining == stats.quota.server_remaining
    assert value(found, "runfleet_ratelimit_remaining_tokens") >= 0


async def test_429s_by_type_and_runs_in_flight_by_state(start_sim: StartSim) -> None:
    registry = CollectorRegistry()
    # Runs of 10-20 s; every request of the first 200 scenario seconds meets a 429 storm (a
    # quota of a few requests is not enough: the fleet learns it from the headers and obeys).
    lifecycle = {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 1000, "high": 2000}}
    scenario = {"lifecycle": lifecycle, "faults": {"storms": {"every": 10**6, "duration": 200}}}
    async with start_sim(scenario) as sim:
        rpm = 20 * sim.app.scenario.quota.rpm / sim.app.scenario.time_scale
        async with fleet_on(sim, rpm=rpm, metrics=registry, on_exit="cancel") as fleet:
            for i in range(10):
                await start(fleet, "responses", str(i))
            with anyio.fail_after(20):
                while fleet.stats().rate_limited == 0:  # noqa: ASYNC110 - a counter
                    await anyio.sleep(0.02)
            found = samples(_generate(registry))  # on the loop: no hop
    assert value(found, "runfleet_rate_limited_total", type="requests") >= 1
    assert value(found, "runfleet_requests_total", kind="create", outcome="rate_limited") >= 1
    assert sum(v for (n, _), v in found.items() if n == "runfleet_runs_in_flight") == 10


def _generate(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


async def test_one_registry_holds_one_fleet_and_names_what_it_exposes(
    start_sim: StartSim,
) -> None:
    registry = CollectorRegistry()
    async with start_sim() as sim, sdk(sim) as client:
        Fleet(client, rpm=600, metrics=registry)
        with pytest.raises(ValueError, match="own registry"):
            Fleet(client, rpm=600, metrics=registry)
        WebhookReceiver(Fleet(client, rpm=600), secret="whsec_c2VjcmV0", metrics=registry)
        exposed = {(f.name, f.type) for f in text_string_to_metric_families(_generate(registry))}
    assert exposed == set(FLEET_FAMILIES) | set(RECEIVER_FAMILIES)  # described = collected


async def test_the_receiver_counts_events_by_type_and_verification(start_sim: StartSim) -> None:
    registry = CollectorRegistry()
    async with start_sim() as sim, fleet_on(sim, webhooks=True) as fleet:
        receiver = WebhookReceiver(fleet, secret="whsec_c2VjcmV0", metrics=registry)
        async with serve_asgi(receiver) as port, httpx2.AsyncClient() as http:
            headers = {"content-type": "application/json", "webhook-id": "msg_1"}
            headers |= {"webhook-timestamp": "1", "webhook-signature": "v1,Zm9yZ2Vk"}
            answer = await http.post(f"http://127.0.0.1:{port}/", content=b"{}", headers=headers)
        found = samples(_generate(registry))
    assert answer.status_code == 400
    assert value(found, "runfleet_webhook_events_total", type="unverified", result="signature") == 1


@pytest.mark.soak  # make test stays in its budget; make soak runs it
@pytest.mark.timeout(120)  # an interpreter starting on a loaded 2-core box
async def test_a_batch_serves_metrics_while_it_runs(start_sim: StartSim, tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 20)
    port = free_port()
    # Runs of 3-6 s: the batch is still running when the first scrape gets through.
    lifecycle = {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 300, "high": 600}}
    async with start_sim({"lifecycle": lifecycle}) as sim:
        args = [str(inp), "--out", str(tmp_path / "o.jsonl"), "--model", "m", *on(sim)]
        proc = await spawn([*args, "--metrics-port", str(port)])
        try:
            found: Found = {}
            with anyio.fail_after(90):
                while ("runfleet_requests_total", CREATED) not in found:
                    with contextlib.suppress(httpx2.ConnectError):  # not listening yet
                        found = samples(await scrape(port))
                    await anyio.sleep(0.05)
        finally:
            done = await finish(proc, within=90)
    assert done.returncode == 0, done.stderr
    assert value(found, "runfleet_quota_requests_per_minute") > 0
    assert value(found, "runfleet_requests_total", kind="create", outcome="ok") >= 1


CREATED = frozenset({("kind", "create"), ("outcome", "ok")})


async def test_a_batch_refuses_a_metrics_port_in_use(start_sim: StartSim, tmp_path: Path) -> None:
    inp = write_items(tmp_path / "in.jsonl", 2)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with start_sim() as sim:
            args = [str(inp), "--out", str(tmp_path / "o.jsonl"), "--model", "m", *on(sim)]
            done = await batch([*args, "--metrics-port", str(port)])
            requests = sum(sim.stats()["requests"].values())
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"runfleet batch: cannot serve metrics on :{port}: Address already in use"
    ]
    assert requests == 0  # refused before anything was sent
    assert not (tmp_path / "o.jsonl").exists()
