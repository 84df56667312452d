"""A backlog of creates on a tight quota: runs already started are still seen done promptly.

All runs are submitted at once against 600 requests per minute, enforced per second: the
creates alone take the quota for minutes. A started run is a debt of polls, so creates and
polls share the quota while both wait (``create_share``, DESIGN invariant 5): the runs that
finished are noticed within a bounded delay, measured by the simulator (from the moment a
run ended to the first poll that saw it), never after the backlog drained. The bound stated:
detection p95 at most half the time the creates alone take (``runs / quota``), for runs much
shorter than that; creates first would make it about all of it (13.6 s of a 15 s backlog
here, measured with ``RequestQuota(create_share=1.0)``). The short version runs in
``make test``, the long one (3,000 runs) in ``make soak``.
"""

from __future__ import annotations

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from runfleet import Fleet, ResponseSpec
from runfleet.sim import SimApp

from ..helpers import API_KEY

QUOTA = 600  # per minute, enforced per second
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
        pytest.param(150, id="short", marks=[pytest.mark.soak, pytest.mark.timeout(180)]),
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
    assert detection["p95"] <= backlog / 2
