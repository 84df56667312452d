"""A backlog of creates on a tight quota: runs already started are still seen done promptly.

All runs are submitted at once against 600 requests per minute, enforced per second: the
creates alone take the quota for as long as ``runs / 10`` seconds. A started run is a debt of
polls (DESIGN invariant 5): creates and polls share the quota while both wait
(``create_share``), and a poll whose run has been late longer than its patience (20
admissions: 2 s here) goes before every create; late counts from its due time plus half its
run's age then (``LATE_SHARE``). The bound stated: for runs of about 2 s, detection p95
(measured by the simulator, from the moment a run ended to the first poll that saw it) stays
within 5 s however long the backlog (the patience, plus half the run's age, plus the
schedule's own lateness: 1.1 s p95 with no backlog), 10 s of creates or 300 s: 4.8 s and
1.4 s (3.9 s and 0.5 s when late counted from the due time alone). Before polls aged into
priority it grew with the backlog: 7.6 s p95 for 100 runs, 10.3 s for 150, 14.0 s for 600.
The short version (100 runs) runs in ``make test``, the long one (3,000) in ``make soak``.
"""

from __future__ import annotations

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet import Fleet, ResponseSpec
from runfleet.sim import SimApp

from ..helpers import API_KEY

QUOTA = 600  # per minute, enforced per second
BOUND = 5.0  # seconds: detection p95, whatever the backlog
SCENARIO = {
    "seed": 3,
    "lifecycle": {"queued": 0.2, "in_progress": 2.0},  # runs far shorter than the backlog
    "outcomes": {"failed": 0.0},
    "quota": {"rpm": QUOTA, "window": 1},
}


# On a fake clock (looptime) with the simulator in-process: minutes pass in seconds, and the
# figures do not depend on how loaded the machine is.
@pytest.mark.looptime
@pytest.mark.parametrize(
    "runs",
    [
        pytest.param(100, id="short", marks=pytest.mark.timeout(180)),
        pytest.param(3000, id="long", marks=[pytest.mark.soak, pytest.mark.timeout(3600)]),
    ],
)
async def test_a_create_backlog_delays_detection_by_a_bounded_share(runs: int) -> None:
    app = SimApp(SCENARIO)
    http = DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
    client = AsyncOpenAI(base_url="http://sim/v1", api_key=API_KEY, http_client=http)
    specs = [ResponseSpec("gpt-5-mini", f"q{i}") for i in range(runs)]
    async with client, Fleet(client, rpm=QUOTA, seed=11) as fleet:
        ended = [h async for h in fleet.map(specs, max_in_flight=runs)]
    seen = app.snapshot()
    detection = seen["responses"]["detection"]
    backlog = runs / QUOTA * 60  # seconds the creates alone take
    print(
        f"\ncreate backlog: {runs} runs at once on {QUOTA} RPM (creates alone: {backlog:.0f} s); "
        f"detection p50 {detection['p50']:.1f} s, p95 {detection['p95']:.1f} s, max "
        f"{detection['max']:.1f} s; {seen['requests_total']} requests in {seen['now']:.0f} s; "
        f"quota 429s {seen['rate_limited']}"
    )
    assert all(h.exception() is None for h in ended)
    assert seen["rate_limited"] == 0
    assert detection["p95"] <= BOUND
