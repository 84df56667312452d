"""What the two kinds of simulated run share: ids, errors, plans and tool-call drawing."""

from __future__ import annotations

import json
import random
import secrets
import string
from collections.abc import Iterable, Mapping
from typing import Any

from .lifecycle import Job, draw_plan
from .scenario import Scenario

__all__ = ["SimError", "World", "new_id"]

_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str, hex_chars: int = 0, alnum: int = 24) -> str:
    """Return an id with OpenAI's prefix and shape (``resp_`` + 50 hex, ``run_`` + 24 alnum)."""
    if hex_chars:
        return prefix + secrets.token_hex(hex_chars // 2)
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(alnum))


class SimError(Exception):
    """Raised by a handler to answer with OpenAI's error shape instead of a traceback."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """Return the JSON body OpenAI sends with this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def not_found(what: str, ident: str) -> SimError:
    """Return the 404 OpenAI answers for an unknown id."""
    return SimError(404, f"No {what} found with id '{ident}'.")


class World:
    """Holds the scenario and the seeded randomness every store draws from.

    ``now`` is scenario seconds since the server started, passed in by the HTTP layer, so the
    stores never read a clock and can be tested with literal times.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.first_passes = 0  # runs created (not tool rounds): when the workload drifts

    def new_job(
        self, ident: str, now: float, *, expires: bool, plan_from: Job | None = None
    ) -> Job:
        """Create a job: draw its fate (or inherit a chain's) and its first phase's timing.

        ``expires`` marks an Assistants run: it expires and stops in ``requires_action``;
        a response does neither.
        """
        sc = self.scenario
        plan = plan_from.plan if plan_from else draw_plan(sc, self.rng)
        rounds = plan_from.rounds_left - 1 if plan_from else plan.rounds
        if plan_from:
            queued = sc.lifecycle.queued.draw(self.rng)
            work = sc.lifecycle.resume.draw(self.rng)
        else:
            queue_dist = sc.stalls.queued if plan.stalled else sc.lifecycle.queued
            queued = queue_dist.draw(self.rng)
            work = sc.lifecycle.in_progress.draw(self.rng)
            self.first_passes += 1
            drift = sc.lifecycle.drift_after
            if drift is not None and self.first_passes > drift:
                work *= sc.lifecycle.drift_factor
        return Job(
            id=ident,
            created=now,
            running_at=now + queued,
            done_at=now + queued + work,
            plan=plan,
            rounds_left=rounds,
            expires_at=now + sc.lifecycle.expires_after if expires else None,
            stops_for_action=expires,
        )

    def draw_calls(self, declared: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
        """Draw a round of (function name, JSON arguments) from the request's own tools."""
        funcs = [f for t in declared if (f := _function_of(t)) is not None]
        if not funcs:
            funcs = [{"name": n, "parameters": {}} for n in self.scenario.tools.names]
        count = max(1, round(self.scenario.tools.calls_per_round.draw(self.rng)))
        calls = []
        for _ in range(count):
            fn = self.rng.choice(funcs)
            args = _sample_arguments(fn.get("parameters") or {}, self.rng)
            calls.append((str(fn["name"]), json.dumps(args)))
        return calls


def _function_of(tool: Mapping[str, Any]) -> dict[str, Any] | None:
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        return None
    inner = tool.get("function", tool)  # Assistants nest it; Responses do not
    if not isinstance(inner, Mapping) or not isinstance(inner.get("name"), str):
        return None
    return dict(inner)


def _sample_arguments(schema: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """Fill a function's required parameters with plausible values of the declared types."""
    props = schema.get("properties") or {}
    if not isinstance(props, Mapping):
        return {}
    required = schema.get("required") or list(props)
    return {name: _sample_value(props.get(name) or {}, rng) for name in required if name in props}


def _sample_value(schema: Mapping[str, Any], rng: random.Random) -> Any:
    if not isinstance(schema, Mapping):
        return "sample"
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return [_sample_value(schema.get("items") or {}, rng)]
    if kind == "object":
        return _sample_arguments(schema, rng)
    return rng.choice(["Oslo", "Lima", "Kyoto", "Accra", "Quito"])
