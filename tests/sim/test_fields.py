"""Bodies carry every field of the SDK's models and nothing it does not know."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.beta import Thread
from openai.types.beta.threads import Message, Run
from openai.types.responses import Response
from pydantic import BaseModel

from runfleet.sim import SimApp

# Fields the live API sends that this SDK's model does not declare.
EXTRA_OK = {"store"}


def fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def check(body: dict[str, Any], model: type[BaseModel]) -> None:
    keys = set(body)
    assert fields(model) - keys == set(), "missing fields"
    assert keys - fields(model) - EXTRA_OK == set(), "fields the SDK does not know"
    parsed = model.model_validate(body)  # validating, unlike the SDK's lenient construct
    assert parsed.model_dump(by_alias=True, exclude_unset=False)["id"] == body["id"]


@pytest.fixture
def app() -> SimApp:
    scenario = {"tools": {"probability": 1.0, "rounds": 1}, "outcomes": {"failed": 0.0}}
    return SimApp(scenario, clock=lambda: 0.0)


@pytest.mark.parametrize("at", [0.0, 1e6])
def test_response_body_has_every_field(app: SimApp, at: float) -> None:
    body = app.responses.create({"model": "m", "input": "x", "background": True}, 0.0)
    check(body, Response)
    later, _ = app.responses.retrieve(body["id"], at)
    check(later, Response)


def test_assistants_bodies_have_every_field(app: SimApp) -> None:
    run = app.assistants.create_thread_and_run(
        {"assistant_id": "asst_1", "thread": {"messages": [{"role": "user", "content": "x"}]}},
        0.0,
    )
    check(run, Run)
    action, _ = app.assistants.retrieve_run(run["thread_id"], run["id"], 500.0)
    assert action["status"] == "requires_action"
    check(action, Run)
    check(app.assistants.retrieve_thread(run["thread_id"]), Thread)
    check(app.assistants.retrieve_run(run["thread_id"], run["id"], 1e5)[0], Run)
    listed = app.assistants.list_messages(run["thread_id"], {}, 1e5)
    for msg in listed["data"]:
        check(msg, Message)
