"""``Fleet.map`` and its feeder: submissions that create or attach, slots before items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from runfleet import AssistantRunSpec, AuthError, Fleet, ResponseSpec, RunHandle, Submission
from runfleet.engine.feeder import feed

from .helpers import StartSim, fleet_on

KINDS = ["responses", "assistants"]
FAST = {"lifecycle": {"queued": 0.2, "in_progress": 2.0, "resume": 1.0}}


def spec(kind: str, prompt: str) -> ResponseSpec | AssistantRunSpec:
    if kind == "responses":
        return ResponseSpec("gpt-5-mini", prompt)
    return AssistantRunSpec("asst_test", prompt)


async def created_elsewhere(fleet: Fleet, kind: str) -> Submission:
    """Create a run with the bare SDK, as another process would; return how to attach to it."""
    client = fleet.client
    if kind == "responses":
        response = await client.responses.create(
            model="gpt-5-mini", input="hi", background=True, store=True
        )
        return Submission(tag="theirs", response_id=response.id)
    run = await client.beta.threads.create_and_run(
        assistant_id="asst_test", thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    return Submission(tag="theirs", thread_id=run.thread_id, run_id=run.id)


def creates(stats: dict[str, Any]) -> int:
    names = ("responses.create", "threads.create_and_run")
    return sum(stats["requests"].get(name, 0) for name in names)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_submission_with_ids_is_watched_not_created(start_sim: StartSim, kind: str) -> None:
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        attach = await created_elsewhere(fleet, kind)
        items = [spec(kind, "mine"), attach]
        handles = {h.tag: h async for h in fleet.map(items, max_in_flight=4)}
        stats = sim.stats()
    assert set(handles) == {0, "theirs"}  # a plain spec keeps its position as its tag
    assert (await handles["theirs"]).text == "Simulated reply to: hi"
    assert (await handles[0]).status == "completed"
    assert creates(stats) == 2  # the attached run was created once, by "another process"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_submission_sets_its_tag_and_hears_its_ids_first(
    start_sim: StartSim, kind: str
) -> None:
    heard: list[tuple[str, str]] = []

    def on_ids(handle: RunHandle) -> None:
        assert not handle.done()  # before anything else happens to the run
        heard.append((str(handle.tag), handle.id))

    items = [Submission(spec(kind, f"q{i}"), tag=f"item{i}", on_ids=on_ids) for i in range(3)]
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        ended = [h async for h in fleet.map(items, max_in_flight=2)]
    assert sorted(h.tag for h in ended) == ["item0", "item1", "item2"]
    assert sorted(heard) == sorted((h.tag, h.id) for h in ended)


async def test_the_feeder_takes_a_slot_before_it_pulls_the_next_item(
    start_sim: StartSim,
) -> None:
    """A generator is resumed only when a slot is free: what it yields is opened at once."""
    limit, pulled, ended, ahead = 2, 0, 0, []

    def count_end(handle: RunHandle) -> None:
        def one_more(_: RunHandle) -> None:
            nonlocal ended
            ended += 1

        handle.add_done_callback(one_more)

    async def items() -> AsyncIterator[Submission]:
        nonlocal pulled
        for i in range(6):
            ahead.append(pulled - ended)  # runs opened and not ended when asked for one more
            pulled += 1
            yield Submission(ResponseSpec("m", f"q{i}"), tag=i, on_ids=count_end)

    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        tags = [h.tag async for h in fleet.map(items(), max_in_flight=limit)]
    assert sorted(tags) == list(range(6))
    assert max(ahead) < limit


async def test_a_fleet_that_cannot_start_more_stops_pulling_and_closes_the_generator(
    start_sim: StartSim,
) -> None:
    """A refused key breaks the fleet: map ends with what it opened, the rest is never pulled."""
    closed, pulled = [], []

    async def items() -> AsyncIterator[ResponseSpec]:
        try:
            for i in range(100):
                pulled.append(i)
                yield ResponseSpec("m", f"q{i}")
        finally:
            closed.append(True)

    async with start_sim(FAST, api_key="sk-right-key-0000") as sim, fleet_on(sim) as fleet:
        ended = [h async for h in fleet.map(items(), max_in_flight=3)]
    assert closed == [True]
    assert 3 <= len(pulled) <= 6  # three opened, and what the freed slots pulled meanwhile
    assert ended
    assert all(isinstance(h.exception(), AuthError) for h in ended)


async def test_a_source_waiting_for_more_is_abandoned_once_nothing_can_start(
    start_sim: StartSim,
) -> None:
    """A generator waiting for something (runs to end, say) is cancelled when opens refuse."""
    cancelled = []

    async def items() -> AsyncIterator[ResponseSpec]:
        yield ResponseSpec("m", "refused")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    async with start_sim(FAST, api_key="sk-right-key-0000") as sim, fleet_on(sim) as fleet:

        async def open_run(submission: Submission) -> RunHandle:
            assert submission.spec is not None
            return await fleet.submit(submission.spec, tag=submission.tag)  # raises if refused

        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                ended = [h async for h in feed(items(), open_run, tg, max_in_flight=4)]
    assert ended == []
    assert cancelled == [True]


async def test_a_bad_item_is_raised_to_the_consumer(start_sim: StartSim) -> None:
    async with start_sim(FAST) as sim, fleet_on(sim) as fleet:
        with pytest.raises(TypeError, match="expected a ResponseSpec, AssistantRunSpec or Sub"):
            [h async for h in fleet.map([{"model": "m", "input": "hi"}])]  # type: ignore[list-item]
        assert (await fleet.respond(model="m", input="still open")).status == "completed"


def test_a_submission_names_what_to_create_or_what_to_attach_to() -> None:
    with pytest.raises(ValueError, match="needs a spec to create, or ids"):
        Submission()
    with pytest.raises(ValueError, match="thread_id and run_id"):
        Submission(run_id="run_1")
    with pytest.raises(ValueError, match="by response_id, or by thread_id and run_id"):
        Submission(response_id="resp_1", thread_id="thread_1", run_id="run_1")
    with pytest.raises(TypeError, match="not str"):
        Submission("gpt-5-mini")  # type: ignore[arg-type]
    assert Submission(response_id="resp_1").attaches
    assert not Submission(ResponseSpec("m", "hi")).attaches
