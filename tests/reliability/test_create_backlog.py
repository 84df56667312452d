"""A backlog of creates on a tight quota: runs already started are still seen done promptly.

All runs are submitted at once against 600 requests per minute, enforced per second: the
creates alone take the quota for minutes. A started run is a debt of polls, so creates and
polls share the quota while both wait (``create_share``, DESIGN invariant 5): the runs that
finished are noticed within a bounded delay, measured by the simulator (from the moment a
run ended to the first poll that saw it), never after the backlog drained. The bound stated:
detection p95 at most half the time the creates alone take (``runs / quota``; creates first
would make it about all of it). The short version runs in ``make test``, the long one
(3,000 runs) in ``make soak``.
"""

from __future__ import annotations

import pytest

from runfleet import ResponseSpec
from runfleet.polling.policy import PollPolicy

from ..helpers import StartSim, fleet_on

QUOTA = 600  # per scenario minute, enforced per second
SCALE = 0.2
SCENARIO = {
    "lifecycle": {"queued": 0.5, "in_progress": 8.0},
    "outcomes": {"failed": 0.0},
    "quota": {"rpm": QUOTA, "window": 1},
}


@pytest.mark.parametrize(
    "runs",
    [
        pytest.param(150, id="short", marks=pytest.mark.timeout(180)),
        pytest.param(3000, id="long", marks=[pytest.mark.soak, pytest.mark.timeout(3600)]),
    ],
)
async def test_a_create_backlog_delays_detection_by_a_bounded_share(
    start_sim: StartSim, runs: int
) -> None:
    specs = [ResponseSpec("gpt-5-mini", f"q{i}") for i in range(runs)]
    async with start_sim(SCENARIO, time_scale=SCALE) as sim:
        policy = PollPolicy().scaled(SCALE)
        # The simulator counts per scenario second (0.2 s here): bursts fit that window.
        async with fleet_on(sim, policy=policy, burst=QUOTA / 60) as fleet:
            ended = [h async for h in fleet.map(specs, max_in_flight=runs)]
        seen = sim.stats()
    detection = seen["responses"]["detection"]
    backlog = runs / QUOTA * 60  # scenario seconds the creates alone take
    print(
        f"\ncreate backlog: {runs} runs at once on {QUOTA} RPM (creates alone: {backlog:.0f} s); "
        f"detection p50 {detection['p50']:.1f} s, p95 {detection['p95']:.1f} s, max "
        f"{detection['max']:.1f} s (scenario seconds); quota 429s {seen['rate_limited']}"
    )
    assert all(h.exception() is None for h in ended)
    assert detection["p95"] <= backlog / 2
