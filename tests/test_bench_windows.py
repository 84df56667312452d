"""``runfleet bench`` on a discounted window: the ``overnight`` workload asks every strategy
for the ``8h`` window, waits long enough for it, and states each fixed schedule's real-time
polls beside what the loop did at the bench's time scale."""

from __future__ import annotations

import pytest

from runfleet.bench import BenchConfig, BenchError, StrategySpec, run_bench
from runfleet.bench.windows import schedule_polls, waited, workload_window
from runfleet.polling.schedule import Backoff
from runfleet.sim.scenario import load_scenario

from .helpers import StartSim


def test_overnight_asks_for_8h_unless_told_otherwise() -> None:
    overnight, ample = load_scenario("overnight"), load_scenario("ample")
    assert workload_window(None, overnight, "responses") == "8h"
    assert workload_window("2h", overnight, "responses") == "2h"
    assert workload_window(None, ample, "responses") is None
    assert waited(60.0, "8h") == 1.5 * 28800
    assert waited(60.0, None) == waited(60.0, "soonest") == 60.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "assistants"}, "a completion window needs --kind responses"),
        ({"completion_window": "3h"}, "--completion-window must be soonest, 2h or 8h"),
    ],
)
def test_a_bad_window_is_refused_in_one_line(changes: dict[str, str], message: str) -> None:
    with pytest.raises(BenchError, match=message) as info:
        BenchConfig(scenario="overnight", **changes).check()  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_fixed_schedules_are_replayed_over_each_response_of_the_record() -> None:
    stats = {"responses": {"items": [{"seconds": 7200.0}, {"seconds": 600.0}]}}
    classic = schedule_polls(StrategySpec("classic"), stats, done=1)
    assert classic == Backoff().polls_for(7200.0) + Backoff().polls_for(600.0)
    assert schedule_polls(StrategySpec("fixed2s"), stats, done=2) == (3600 + 300) / 2
    assert schedule_polls(StrategySpec("fleet"), stats, done=1) is None


@pytest.mark.soak  # make test stays in its budget; make soak runs it
async def test_every_strategy_waits_in_the_8h_window_and_the_fleet_polls_minutes_apart(
    start_sim: StartSim,
) -> None:
    async with start_sim("overnight") as sim:
        cfg = BenchConfig(
            scenario="overnight",
            runs=6,
            time_scale=0.0002,  # the 8h window lasts 5.8 s
            # A slow classic loop: at this scale its 5 s cap would be a busy loop of 1 ms.
            strategies="classic:initial=60s,cap=600s,fleet",
            base_url=sim.base_url,
            seed=3,
        )
        classic, fleet = (await run_bench(cfg)).rows
        windows = sim.stats()["responses"]["windows"]
    assert set(windows) == {"8h"}  # the fleet's requests, the last reset's record
    assert fleet.ok + fleet.failed == 6
    assert fleet.polls_per_run is not None
    assert fleet.polls_per_run <= 20
    replayed = classic.extra["schedule_polls_per_run"]
    assert classic.polls_per_run is not None
    # Round trips only make the loop poll less often than its schedule says.
    assert replayed >= 0.9 * classic.polls_per_run
    assert "schedule_polls_per_run" not in fleet.extra
    # Tool rounds are responses of their own: the per-response figure divides by all of them.
    assert fleet.extra["responses"] >= 6
    assert fleet.extra["polls_per_response"] * fleet.extra["responses"] == pytest.approx(
        windows["8h"]["retrieves"], abs=0.05 * fleet.extra["responses"]
    )
