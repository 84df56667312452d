"""Answers that cannot be read: a bad poll never fails a healthy run, a bad create is ambiguous."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runfleet import AmbiguousCreate, Fleet, RunRejected, tool
from runfleet.kinds.base import marked

from .helpers import StartSim, fleet_on, sdk, start

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
        handles = await asyncio.gather(*(start(fleet, kind, f"q{i}") for i in range(12)))
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        stats = fleet.stats()
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert stats.finished == {"completed": 12}
    assert stats.outcomes["unreadable"] >= 1
    seen = sim.stats()["faults"]
    assert seen["malformed"] + seen["truncated"] >= 1
    if kind == "responses":
        assert seen["missing_output"] >= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_unreadable_create_is_ambiguous_not_rejected(start_sim: StartSim, kind: str) -> None:
    """The run exists on the server: with ``fail`` it is reported ambiguous, never refused."""
    faults = {"malformed": 1.0, "bad_bodies_on": ["create"]}
    async with start_sim({**FAST, "faults": faults}) as sim:
        async with fleet_on(sim, on_ambiguous_create="fail") as fleet:
            with pytest.raises(AmbiguousCreate, match="unreadable answer") as info:
                await start(fleet, kind)
            stats = fleet.stats()
    assert not isinstance(info.value, RunRejected)
    assert info.value.outcome == "ambiguous"
    assert stats.ambiguous_creates == 1
    assert stats.finished == {"ambiguous": 1}
    assert sim.stats()["responses" if kind == "responses" else "runs"]["total"] == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_ambiguous_creates_are_retried_and_each_copy_is_marked(
    start_sim: StartSim, kind: str
) -> None:
    """Every item the server created twice is one the fleet says it recreated, and why."""
    faults = {"malformed": 0.15, "truncated": 0.1, "bad_bodies_on": ["create"], "drop": 0.05}
    async with start_sim({**FAST, "faults": faults}) as sim, fleet_on(sim) as fleet:
        # Started together: a create retried after a lost answer waits out its backoff.
        handles = await asyncio.gather(
            *(
                start(fleet, kind, metadata={"runfleet_item": f"item{i}", "mine": "kept"})
                for i in range(30)
            )
        )
        results = [await h for h in handles]
        stats = fleet.stats()
    marked = {f"item{i}": r.figures.recreated for i, r in enumerate(results) if r.figures.recreated}
    items = sim.stats()["items"]
    assert items["created"] == 30
    assert set(items["repeated"]) == set(marked)
    assert 1 <= items["extra_creates"] <= stats.ambiguous_creates
    if kind == "responses":  # nothing to look in: each ambiguous create is sent again
        assert items["extra_creates"] == stats.ambiguous_creates
    assert set(marked.values()) <= {"unreadable answer", "connection lost"}
    assert stats.finished == {"completed": 30}
    for result in results:  # each try its own nonce, the user's metadata kept
        assert result.raw.metadata["mine"] == "kept"
        assert len(result.raw.metadata["runfleet_try"]) == 16


async def test_full_user_metadata_is_sent_as_it_is(start_sim: StartSim) -> None:
    full = {f"k{i}": "v" for i in range(16)}
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        result = await fleet.respond(model="m", input="x", metadata=full)
    assert result.raw.metadata == full
    assert result.figures.recreated is None


def test_marks_never_clobber_the_users_keys() -> None:
    assert marked({"runfleet_try": "mine"}, runfleet_try="n1") == {"runfleet_try": "mine"}
    assert marked(None, runfleet_try="x" * 600) == {"runfleet_try": "x" * 512}
    assert marked(None) is None


async def test_on_ambiguous_create_is_checked(start_sim: StartSim) -> None:
    async with start_sim(FAST) as sim, sdk(sim) as client:
        with pytest.raises(ValueError, match="on_ambiguous_create must be 'retry' or 'fail'"):
            Fleet(client, rpm=60, on_ambiguous_create="maybe")  # type: ignore[arg-type]


async def test_ambiguous_tool_round_follow_ups_are_marked(start_sim: StartSim) -> None:
    """A tool round's next response is a create too: a copy of it is marked like a first one."""
    scenario = {
        **FAST,
        "tools": {"probability": 1.0, "rounds": 2, "calls_per_round": 1},
        "faults": {"malformed": 0.3, "bad_bodies_on": ["create"]},
    }

    @tool
    def lookup(q: str) -> str:
        """Look it up."""
        return q

    async with start_sim(scenario) as sim, fleet_on(sim, tools=[lookup]) as fleet:
        handles = await asyncio.gather(
            *(
                fleet.submit_response(
                    model="m", input=f"q{i}", metadata={"runfleet_item": f"item{i}"}
                )
                for i in range(12)
            )
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        stats = fleet.stats()
    items = sim.stats()["items"]
    marked_items = {f"item{i}" for i, r in enumerate(results) if r.figures.recreated}
    assert items["extra_followups"] >= 1
    assert set(items["refollowed"]) | set(items["repeated"]) <= marked_items
    assert stats.ambiguous_creates >= items["extra_followups"] + items["extra_creates"]
    assert stats.finished == {"completed": 12}
    for result in results:  # every response of the chain carries its own nonce
        assert len(result.raw.metadata["runfleet_try"]) == 16


async def test_an_ambiguous_run_create_on_a_known_thread_is_found_and_adopted(
    start_sim: StartSim,
) -> None:
    """A run on a known thread can be listed: a lost answer's run is adopted, never doubled."""
    faults = {"malformed": 0.5, "bad_bodies_on": ["create"]}
    async with start_sim({**FAST, "faults": faults}) as sim, fleet_on(sim) as fleet:
        async with sdk(sim) as client:
            threads = [(await client.beta.threads.create()).id for _ in range(10)]
        handles = await asyncio.gather(
            *(
                start(fleet, "assistants", thread_id=t, metadata={"runfleet_item": f"item{i}"})
                for i, t in enumerate(threads)
            )
        )
        results = [await h for h in handles]
        stats = fleet.stats()
    items = sim.stats()["items"]
    assert stats.ambiguous_creates >= 1  # some answers were lost...
    assert items["created"] == 10
    assert items["repeated"] == {}  # ...and no run was created twice
    assert [r.figures.recreated for r in results] == [None] * 10
    assert [r.thread_id for r in results] == threads


async def test_after_an_ambiguous_create_and_run_later_tries_make_their_own_thread(
    start_sim: StartSim,
) -> None:
    """Only the first try's copy cannot be found (a thread made with its run): it is marked;
    later tries create their thread first, so theirs are looked for: one copy at most."""
    faults = {"malformed": 0.6, "bad_bodies_on": ["create"]}
    async with start_sim({**FAST, "faults": faults}) as sim, fleet_on(sim) as fleet:
        handles = await asyncio.gather(
            *(start(fleet, "assistants", metadata={"runfleet_item": f"item{i}"}) for i in range(12))
        )
        results = [await h for h in handles]
    items = sim.stats()["items"]
    marked_items = {f"item{i}" for i, r in enumerate(results) if r.figures.recreated}
    assert items["repeated"]
    assert set(items["repeated"]) <= marked_items
    assert max(items["repeated"].values()) == 2
    assert sim.stats()["requests"]["threads.create"] >= len(items["repeated"])
