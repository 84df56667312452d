"""The simulator's HTTP face: OpenAI's routes, auth, the quota, faults, webhooks and the stats
endpoint.

Every API request passes the same gate in the order OpenAI applies them: auth, then the
requests quota, then (for requests that run the model) the tokens quota, each a 429 with
``retry-after``, then injected faults; only then does a store see it. A request that fails
after its tokens were charged gets them all back; one that ran settles when its run ends. The
``/_sim/`` routes bypass the gate so that observing the simulator never disturbs what it
measures.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from .assistants import AssistantStore
from .lifecycle import Job, Segment
from .limits import AccountLimits, QuotaError
from .responses import ResponseStore
from .scenario import Scenario, load_scenario
from .stats import SimStats
from .tokens import COSTS, TokenMeter
from .webhooks import WebhookSender
from .wire import DropResponse, by_method, json_response, not_found, parse_body, read_body
from .world import SimError, World

__all__ = ["ITEM_KEY", "SimApp", "create_app"]

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Named in 429 messages when the request names no model (a retrieve, a run on an assistant).
_DEFAULT_MODEL = "gpt-5-mini"

# The creates that start a run (a chain's next response too: the gate tells them apart).
_RUN_CREATES = frozenset({"responses.create", "threads.create_and_run", "runs.create"})
ITEM_KEY = "runfleet_item"
"""The metadata key whose value the simulator counts creates by (``/_sim/stats`` ``items``)."""

# A handler answers with a body and the job it touched: the gate reads the job for
# openai-poll-after-ms and to settle the tokens of a pass that a create or cancel laid out.
Handler = Callable[[Request, float], Awaitable[tuple[dict[str, Any], Job | None]]]


class SimApp:
    """One simulated OpenAI account: its stores, quota, faults and counters.

    Args:
        scenario: a built-in name, a JSON file, a dict or a :class:`Scenario`.
        clock: returns seconds on a monotonic clock; defaults to the running event loop's,
            so a test that fast-forwards the loop (looptime) fast-forwards the simulator too.
    """

    def __init__(
        self,
        scenario: str | Scenario | dict[str, Any] = "ample",
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self.scenario: Scenario = load_scenario(scenario)
        self.webhooks = WebhookSender(lambda: self.scenario, self.now, lambda: self.epoch)
        self.reset()
        # A bare Router, not a Starlette app: the app's two middlewares cost a tenth of the
        # throughput, and errors are answered in OpenAI's shape by the endpoints themselves.
        self.asgi = Router(routes=self._routes(), default=not_found)

    def reset(self, scenario: Scenario | None = None) -> None:
        """Forget every run and counter; restart scenario time at zero."""
        self.scenario = scenario or self.scenario
        self.world = World(self.scenario)
        self.epoch = time.time()  # only for the Unix timestamps in bodies, never for timing
        self.responses = ResponseStore(self.world, self.epoch)
        self.assistants = AssistantStore(self.world, self.epoch)
        self.limits = AccountLimits(self.scenario)
        self.meter = TokenMeter(self.scenario.tokens, self.scenario.seed)
        self.stats = SimStats()
        self.faults_rng = random.Random(self.scenario.seed + 1)
        self._t0: float | None = None
        self.webhooks.clear()

    def now(self) -> float:
        """Return scenario seconds since the first request after the last reset."""
        t = self._clock()
        if self._t0 is None:
            self._t0 = t
        return (t - self._t0) / self.scenario.time_scale

    def snapshot(self, per_run: bool = False, timeline: bool = False) -> dict[str, Any]:
        """Return the stats endpoint's data."""
        out = self.stats.snapshot(
            self.now(),
            scenario=self.scenario.name,
            time_scale=self.scenario.time_scale,
            rpm=self.scenario.quota.rpm,
            tokens=self.limits.tokens,
            responses=self.responses.jobs(),
            runs=self.assistants.jobs(),
            per_run=per_run,
            timeline=timeline,
        )
        out["webhooks"] = dict(sorted(self.webhooks.stats.items()))
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the webhook sender lives as long as the server
            await self.webhooks.lifespan(receive, send)
            return
        await self.asgi(scope, receive, send)

    # the gate every API request passes

    def _headers(self, now: float) -> dict[str, str]:
        return {
            "x-request-id": "req_" + secrets.token_hex(16),
            "openai-version": "2020-10-01",
        } | self.limits.headers(now)

    def _endpoint(self, name: str, handler: Handler, poll: bool = False) -> Callable[..., Any]:
        costs = name in COSTS
        # A cancel can end a pass sooner than planned: its refund falls due sooner too.
        settles = costs or name.endswith(".cancel")

        async def endpoint(request: Request) -> Response:
            self.stats.open += 1
            try:
                return await answer(request)
            finally:
                self.stats.open -= 1

        async def answer(request: Request) -> Response:
            now = self.now()
            self.stats.record(name, now)
            try:
                self._authorize(request)
            except SimError as err:
                self.stats.unauthorized += 1
                self.stats.statuses[err.status] += 1
                return json_response(
                    err.status, err.body(), {"x-request-id": "req_" + secrets.token_hex(16)}
                )
            data = await parse_body(request) if request.method == "POST" else None
            model = data.get("model") if data else None
            model = model if isinstance(model, str) and model else _DEFAULT_MODEL
            segment = None
            try:
                self.limits.admit_request(now, model)
                if costs and data is not None:
                    segment = self._price(name, request, data, now)
                    self.limits.admit_tokens(now, segment, model)
                    request.state.segment = segment
            except SimError as err:
                if isinstance(err, QuotaError):
                    self.stats.record_limited(now, err.kind)
                self.stats.statuses[err.status] += 1
                return json_response(err.status, err.body(), self._headers(now) | err.headers)
            # Read after admission, so remaining counts the request being answered.
            headers = self._headers(now)
            try:
                drop = await self._inject_faults()
                body, job = await handler(request, now)
            except SimError as err:
                if segment is not None:
                    self.limits.tokens.refund_all(now, segment)
                self.stats.statuses[err.status] += 1
                return json_response(err.status, err.body(), headers | err.headers)
            if settles and job is not None:
                self.limits.tokens.track(job)
            self.stats.statuses[200] += 1
            if name in _RUN_CREATES and data is not None:
                self._count_created(data)
            pa = self.scenario.poll_after_ms
            if poll and pa is not None and job is not None:
                headers["openai-poll-after-ms"] = str(round(pa * self.scenario.time_scale))
            if drop:
                return json_response(200, body, headers, DropResponse)
            body, spoil = self._spoil(name, body)
            return json_response(200, body, headers, spoil=spoil)

        return endpoint

    def _authorize(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key:
            raise SimError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        expected = self.scenario.api_key
        if expected is not None and not secrets.compare_digest(key, expected):
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            raise SimError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _price(self, name: str, request: Request, data: dict[str, Any], now: float) -> Segment:
        """Return what a request that runs the model is charged, before it is admitted."""
        p = request.path_params
        if name == "runs.create":
            return self.meter.segment(
                name, data, now, context=self.assistants.thread_texts(p["tid"])
            )
        if name == "runs.submit_tool_outputs":
            # The reservation is the run's own max_completion_tokens, set when it started.
            settings = self.assistants.run_request(p["rid"])
            return self.meter.segment(name, data, now, settings=settings)
        return self.meter.segment(name, data, now)

    async def _inject_faults(self) -> bool:
        """Fail, slow down or mark for dropping a fraction of requests, as the scenario says."""
        f = self.scenario.faults
        roll = self.faults_rng.random()
        if roll < f.error_500:
            self.stats.faults["error_500"] += 1
            raise SimError(
                500, "The server had an error while processing your request.", type="server_error"
            )
        if roll < f.error_500 + f.error_503:
            self.stats.faults["error_503"] += 1
            raise SimError(
                503,
                "The engine is currently overloaded, please try again later.",
                type="server_error",
            )
        if f.slow and self.faults_rng.random() < f.slow:
            self.stats.faults["slow"] += 1
            await asyncio.sleep(f.slow_delay.draw(self.faults_rng) * self.scenario.time_scale)
        drop = roll < f.error_500 + f.error_503 + f.drop
        if drop:
            self.stats.faults["drop"] += 1
        return drop

    def _count_created(self, data: dict[str, Any]) -> None:
        """Count an applied create by the item its metadata names; a chain's next apart."""
        meta = data.get("metadata")
        item = meta.get(ITEM_KEY) if isinstance(meta, dict) else None
        if not isinstance(item, str):
            return
        previous = data.get("previous_response_id")
        if isinstance(previous, str) and previous:
            self.stats.record_followup(item, previous)
        else:
            self.stats.record_created(item)

    def _spoil(
        self, name: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Literal["malformed", "truncated"] | None]:
        """Spoil a share of applied answers' bodies, as the scenario says: the work is done."""
        f = self.scenario.faults
        completed = name == "responses.retrieve" and body.get("status") == "completed"
        if completed and f.missing_output and self.faults_rng.random() < f.missing_output:
            self.stats.faults["missing_output"] += 1
            body = {k: v for k, v in body.items() if k != "output"}
        if not (f.malformed or f.truncated) or _answer_class(name) not in f.bad_bodies_on:
            return body, None
        roll = self.faults_rng.random()
        if roll < f.malformed:
            self.stats.faults["malformed"] += 1
            return body, "malformed"
        if roll < f.malformed + f.truncated:
            self.stats.faults["truncated"] += 1
            return body, "truncated"
        return body, None

    # routes

    def _routes(self) -> list[Route]:
        r, a = self.responses_handlers(), self.assistants_handlers()
        run = "/v1/threads/{tid}/runs/{rid}"
        table: list[tuple[str, str, str, Handler]] = [
            ("POST", "/v1/responses", "responses.create", r["create"]),
            ("GET", "/v1/responses/{id}", "responses.retrieve", r["retrieve"]),
            ("POST", "/v1/responses/{id}/cancel", "responses.cancel", r["cancel"]),
            ("POST", "/v1/threads", "threads.create", a["create_thread"]),
            ("POST", "/v1/threads/runs", "threads.create_and_run", a["create_and_run"]),
            ("GET", "/v1/threads/{tid}", "threads.retrieve", a["retrieve_thread"]),
            ("POST", "/v1/threads/{tid}/messages", "messages.create", a["create_message"]),
            ("GET", "/v1/threads/{tid}/messages", "messages.list", a["list_messages"]),
            ("POST", "/v1/threads/{tid}/runs", "runs.create", a["create_run"]),
            ("GET", "/v1/threads/{tid}/runs", "runs.list", a["list_runs"]),
            ("GET", run, "runs.retrieve", a["retrieve_run"]),
            ("POST", run + "/submit_tool_outputs", "runs.submit_tool_outputs", a["submit"]),
            ("POST", run + "/cancel", "runs.cancel", a["cancel_run"]),
        ]
        by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
        for method, path, name, handler in table:
            poll = name.endswith(".retrieve")
            by_path.setdefault(path, {})[method] = self._endpoint(name, handler, poll=poll)
        by_path["/_sim/stats"] = {"GET": self._stats_endpoint}
        by_path["/_sim/reset"] = {"POST": self._reset_endpoint}
        # Every method reaches the dispatcher, which answers a wrong one in OpenAI's shape.
        return [Route(path, by_method(eps), methods=_METHODS) for path, eps in by_path.items()]

    def responses_handlers(self) -> dict[str, Handler]:
        """Return the Responses handlers keyed by operation."""
        # Handlers read self.responses on each call so that reset() swaps the store under them.

        async def create(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            body = self.responses.create(await read_body(req), now, _segment(req))
            job = self.responses.items[body["id"]].job
            if body["background"]:
                self.webhooks.schedule(job, job.done_at)  # its end is known now
            return body, job

        async def retrieve(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return self.responses.retrieve(req.path_params["id"], now)

        async def cancel(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            body = self.responses.cancel(req.path_params["id"], now)
            job = self.responses.items[body["id"]].job
            if job.cancel_done is not None and job.cancel_done <= now:
                self.webhooks.schedule(job, now)  # announced once: the sender dedupes by end
            return body, job

        return {"create": create, "retrieve": retrieve, "cancel": cancel}

    def assistants_handlers(self) -> dict[str, Handler]:
        """Return the Assistants handlers keyed by operation."""

        def s() -> AssistantStore:
            return self.assistants

        def ran(body: dict[str, Any]) -> tuple[dict[str, Any], Job | None]:
            return body, self.assistants.runs[body["id"]].job

        async def create_thread(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return s().create_thread(await read_body(req, allow_empty=True), now), None

        async def create_and_run(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return ran(s().create_thread_and_run(await read_body(req), now, _segment(req)))

        async def retrieve_thread(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return s().retrieve_thread(req.path_params["tid"]), None

        async def create_message(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return s().create_message(req.path_params["tid"], await read_body(req), now), None

        async def list_messages(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return s().list_messages(req.path_params["tid"], dict(req.query_params), now), None

        async def list_runs(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return s().list_runs(req.path_params["tid"], dict(req.query_params), now), None

        async def create_run(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            body = await read_body(req)
            return ran(s().create_run(req.path_params["tid"], body, now, _segment(req)))

        async def retrieve_run(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return s().retrieve_run(req.path_params["tid"], req.path_params["rid"], now)

        async def submit(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            p = req.path_params
            body = await read_body(req)
            return ran(s().submit_tool_outputs(p["tid"], p["rid"], body, now, _segment(req)))

        async def cancel_run(req: Request, now: float) -> tuple[dict[str, Any], Job | None]:
            return ran(s().cancel_run(req.path_params["tid"], req.path_params["rid"], now))

        return {
            "create_thread": create_thread,
            "create_and_run": create_and_run,
            "retrieve_thread": retrieve_thread,
            "create_message": create_message,
            "list_messages": list_messages,
            "list_runs": list_runs,
            "create_run": create_run,
            "retrieve_run": retrieve_run,
            "submit": submit,
            "cancel_run": cancel_run,
        }

    async def _stats_endpoint(self, request: Request) -> Response:
        flag = request.query_params.get
        return JSONResponse(
            self.snapshot(flag("runs") in ("1", "true"), flag("timeline") in ("1", "true"))
        )

    async def _reset_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        try:
            spec = json.loads(raw) if raw.strip() else {}
            scenario = load_scenario(spec["scenario"]) if "scenario" in spec else None
            if scenario is None and "seed" in spec:
                scenario = self.scenario.replace(seed=spec["seed"])
        except (ValueError, TypeError, KeyError) as exc:
            return json_response(400, SimError(400, f"Invalid reset: {exc}").body(), {})
        self.reset(scenario)
        return JSONResponse({"reset": True, "scenario": self.scenario.name})


def _answer_class(name: str) -> Literal["create", "retrieve", "other"]:
    """Return which of ``Faults.bad_bodies_on`` an endpoint's answers belong to."""
    if name in _RUN_CREATES:
        return "create"
    return "retrieve" if name.endswith(".retrieve") else "other"


def _segment(request: Request) -> Segment | None:
    """Return the tokens the gate charged for this request, if it runs the model."""
    segment: Segment | None = getattr(request.state, "segment", None)
    return segment


def create_app(scenario: str | Scenario | dict[str, Any] = "ample") -> SimApp:
    """Return a simulator as an ASGI app (mount it, or use it with ``httpx2.ASGITransport``)."""
    return SimApp(scenario)
