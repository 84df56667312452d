"""Answers that cannot be read: a bad poll never fails a healthy run, a bad create is ambiguous."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .helpers import StartSim, fleet_on, start

KINDS = ["responses", "assistants"]
FAST = {"lifecycle": {"queued": 0.2, "in_progress": 2.0, "resume": 1.0}}


@pytest.mark.parametrize("kind", KINDS)
async def test_unreadable_polls_are_retried_and_every_run_completes(
    start_sim: StartSim, kind: str
) -> None:
    """A third of polls unreadable, half of completed responses without output: none failed."""
    faults: dict[str, Any] = {
        "malformed": 0.2,
        "truncated": 0.1,
        "bad_bodies_on": ["retrieve"],
        "missing_output": 0.5,
    }
    async with start_sim({**FAST, "faults": faults}) as sim, fleet_on(sim) as fleet:
        handles = [await start(fleet, kind, f"q{i}") for i in range(12)]
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        stats = fleet.stats()
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert stats.finished == {"completed": 12}
    assert stats.outcomes["unreadable"] >= 1
    seen = sim.stats()["faults"]
    assert seen["malformed"] + seen["truncated"] >= 1
    if kind == "responses":
        assert seen["missing_output"] >= 1
