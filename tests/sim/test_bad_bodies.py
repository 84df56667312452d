"""Faults after the work is done: bodies that cannot be read, and creates counted per item."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from runfleet.sim import load_scenario
from runfleet.sim.scenario import ScenarioError

from ..helpers import API_KEY, StartSim, sdk


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
async def test_unreadable_create_answer_still_created_the_response(
    start_sim: StartSim, http: str, fault: str
) -> None:
    async with start_sim({"faults": {fault: 1.0}}, time_scale=1.0) as sim, sdk(sim, http) as client:
        with pytest.raises(ValueError, match=r"Expecting|Unterminated|delimiter"):
            await client.responses.create(model="m", input="x", background=True)
    stats = sim.stats()
    assert stats["faults"] == {fault: 1}
    assert stats["statuses"] == {"200": 1}
    assert stats["responses"]["total"] == 1  # the client cannot tell; the server did it


async def test_bad_bodies_spoil_only_the_answers_named(start_sim: StartSim) -> None:
    scenario = {"faults": {"malformed": 1.0, "bad_bodies_on": ["retrieve"]}}
    async with start_sim(scenario, time_scale=1.0) as sim, sdk(sim) as client:
        created = await client.responses.create(model="m", input="x", background=True)
        with pytest.raises(ValueError, match="Expecting"):
            await client.responses.retrieve(created.id)
    assert sim.stats()["faults"] == {"malformed": 1}


async def test_a_completed_response_can_come_back_without_its_output(start_sim: StartSim) -> None:
    scenario = {"lifecycle": {"queued": 0, "in_progress": 0}, "faults": {"missing_output": 1.0}}
    async with start_sim(scenario, time_scale=1.0) as sim, sdk(sim) as client:
        created = await client.responses.create(model="m", input="x", background=True)
        assert created.output is not None  # only a retrieve of a completed one is spoilt
        async with httpx2.AsyncClient() as http:
            got = await http.get(
                f"{sim.base_url}/responses/{created.id}",
                headers={"authorization": f"Bearer {API_KEY}"},
            )
    body = got.json()
    assert body["status"] == "completed"
    assert "output" not in body
    assert sim.stats()["faults"] == {"missing_output": 1}


async def test_creates_are_counted_per_item_from_metadata(start_sim: StartSim) -> None:
    async with start_sim({"faults": {"drop": 1.0}}, time_scale=1.0) as sim, sdk(sim) as client:
        for item in ("a", "a", "b"):
            meta = {"runfleet_item": item, "user": "kept"}
            with pytest.raises(Exception, match="Connection"):
                await client.responses.create(model="m", input="x", metadata=meta)
        # Applied, then dropped: the client saw an error, the server counted a create.
        assert sim.stats()["items"] == {
            "created": 2, "extra_creates": 1, "repeated": {"a": 2},
            "extra_followups": 0, "refollowed": {},
        }  # fmt: skip
        sim.reset(load_scenario({"lifecycle": {"queued": 0, "in_progress": 0}}))
        first = await client.responses.create(model="m", input="x", metadata={"runfleet_item": "c"})
        # The next response of a chain carries the same metadata: it is not a new create.
        await client.responses.create(
            model="m", input="y", previous_response_id=first.id, metadata={"runfleet_item": "c"}
        )
        await client.beta.threads.create_and_run(
            assistant_id="asst_x", metadata={"runfleet_item": "c"}
        )
        await client.responses.create(model="m", input="no item")
    stats = sim.stats()
    items = {k: stats["items"][k] for k in ("created", "extra_creates", "repeated")}
    assert items == {"created": 1, "extra_creates": 1, "repeated": {"c": 2}}


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"malformed": 0.6, "truncated": 0.6}, r"malformed \+ truncated exceeds 1"),
        ({"bad_bodies_on": ["polls"]}, "faults.bad_bodies_on.0"),
        ({"missing_output": 2}, "faults.missing_output"),
    ],
)
def test_bad_body_faults_are_validated(faults: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario({"faults": faults})
