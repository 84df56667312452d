"""runfleet itself as a bench strategy: ``fleet``, its settings, and ``fleet:webhooks``.

The fleet runs with its defaults unless the spec names a setting. Every duration it waits on
is converted to real time like the simulator's, so that at any time scale it sees the same
scenario as the hand-written loops: its backoff, stall limits and latency target are scaled,
its quota is the account's RPM in real minutes, and its burst is one scenario second's share
(the window OpenAI enforces sub-minute, and the fleet's default burst). Its token limit is
learned from the headers, per scenario minute: the token quota's minute is scaled too.
``per_second=N`` holds at most N requests in any scenario second; without it the fleet learns
a per-second share at time scale 1 only, since it reads the server's windows in its own real
seconds.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from ..admission.quota import RequestQuota
from ..admission.token_quota import TokenQuota
from ..errors import RunCancelled, RunExpired, RunFailed, RunIncomplete
from ..fleet import Fleet
from ..kinds.assistants import AssistantRunSpec
from ..kinds.responses import ResponseSpec
from ..polling.policy import PollPolicy
from ..webhooks import WebhookReceiver
from .strategy import StrategySpec
from .workload import ASSISTANT_ID, MODEL, Outcome, Workload, lookup, tool_definitions

__all__ = ["Reset", "run_fleet"]

Reset = Callable[[dict[str, Any] | None], Awaitable[None]]
"""Reset the simulator again, with these webhook settings (``None``: none)."""

_RUNS_OWN_END = (RunFailed, RunIncomplete, RunExpired, RunCancelled)


async def run_fleet(
    w: Workload, spec: StrategySpec, reset: Reset, extra: dict[str, Any]
) -> list[Outcome]:
    """Run the workload through one :class:`Fleet`; fill ``extra`` with the receiver's stats.

    With ``webhooks``, a :class:`WebhookReceiver` is served on loopback for the duration and
    the simulator is reset to deliver to it, dropping the ``drop`` fraction of deliveries for
    good (no retry reaches the receiver), so the safety-net poll is all that finds those runs.
    """
    from ..sim.server import serve_asgi  # the bench serves the receiver as a deployment would

    settings: dict[str, Any] = {}
    if "latency" in spec.options:
        settings["latency_target"] = spec.number("latency", 0)
    if "fraction" in spec.options:
        settings["latency_fraction"] = spec.number("fraction", 0)
    if spec.options.get("comb"):
        settings["comb"] = True
    policy = PollPolicy(**settings).scaled(w.scale)
    webhooks = bool(spec.options.get("webhooks"))
    share = spec.number("per_second", 1.0) if "per_second" in spec.options else None
    quota = RequestQuota(
        w.rpm / w.scale,
        burst=share or max(1.0, w.rpm / 60),
        tokens=TokenQuota(minute=60 * w.scale),
        per_second=share,  # a scenario second is the share's window, at any scale
        per_second_window=w.scale,
    )
    fleet = Fleet(
        w.client,
        rpm=w.rpm / w.scale,
        quota=quota,
        tools=[lookup],
        policy=policy,
        timeout=w.real(w.limit),
        seed=1,
        webhooks=webhooks,
        safety_poll=w.real(spec.number("safety", 60.0)),
    )
    outcomes: list[Outcome] = ["lost"] * w.runs
    specs = [_spec(w, i) for i in range(w.runs)]
    async with fleet:
        if not webhooks:
            await _map(fleet, specs, w.in_flight, outcomes, extra)
            return outcomes
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        receiver = WebhookReceiver(fleet, secret=secret)
        async with serve_asgi(receiver) as port:
            drop = spec.number("drop", 0.0)
            # Lost for good: a dropped delivery is not retried, as after OpenAI's last retry.
            await reset({"url": f"http://127.0.0.1:{port}/", "secret": secret, "drop": drop})
            await _map(fleet, specs, w.in_flight, outcomes, extra)
        extra["receiver"] = dataclasses.asdict(receiver.stats())
    return outcomes


def _spec(w: Workload, i: int) -> ResponseSpec | AssistantRunSpec:
    if w.kind == "responses":
        options = w.background(i).get("background_options", {})
        return ResponseSpec(
            MODEL,
            w.prompt(i),
            completion_window=options.get("completion_window"),
            continuation_id=options.get("continuation_id"),
        )
    return AssistantRunSpec(ASSISTANT_ID, w.prompt(i), tools=tuple(tool_definitions("assistants")))


async def _map(
    fleet: Fleet, specs: list[Any], in_flight: int, outcomes: list[Outcome], extra: dict[str, Any]
) -> None:
    why: Counter[str] = Counter()
    async for handle in fleet.map(specs, max_in_flight=in_flight):
        error = handle.exception()
        if error is None:
            outcomes[handle.tag] = "ok"
        elif isinstance(error, _RUNS_OWN_END):
            outcomes[handle.tag] = "failed"
        else:  # the fleet gave up on it: say why, or a lost run is a mystery
            outcomes[handle.tag] = "lost"
            text = str(error).removeprefix(f"{getattr(error, 'run_id', '')}: ")
            why[f"{type(error).__name__}: {text}"[:200]] += 1
    if why:
        extra["lost_because"] = dict(why.most_common(3))
