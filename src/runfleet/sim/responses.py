"""Responses background mode: create, retrieve, cancel, and tool rounds chained by id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .lifecycle import TERMINAL, Job, JobStatus, Segment
from .tokens import response_usage
from .windows import BackgroundOptions, parse_background_options, place_in_window
from .world import SimError, World, new_id, not_found

__all__ = ["ResponseStore"]


@dataclass(slots=True)
class _Response:
    job: Job
    request: dict[str, Any]
    prompt: str
    background: bool
    tools: list[dict[str, Any]]
    options: BackgroundOptions
    calls: list[dict[str, Any]] = field(default_factory=list)


class ResponseStore:
    """All responses of one simulated account, keyed by id."""

    def __init__(self, world: World, epoch: float) -> None:
        self.world = world
        self.epoch = epoch
        self.items: dict[str, _Response] = {}

    def __len__(self) -> int:
        return len(self.items)

    def jobs(self) -> list[Job]:
        """Return every response's job, for the stats endpoint."""
        return [r.job for r in self.items.values()]

    def create(
        self, body: dict[str, Any], now: float, segment: Segment | None = None
    ) -> dict[str, Any]:
        """Create a response; background ones start ``queued`` and are polled.

        ``segment`` is what admission charged for it; its usage is settled when it ends.
        """
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise SimError(
                400, "Missing required parameter: 'model'.", param="model",
                code="missing_required_parameter",
            )  # fmt: skip
        background = bool(body.get("background", False))
        if background and body.get("store") is False:
            raise SimError(
                400, "Background mode requires 'store' to be true.", param="store",
                code="invalid_value",
            )  # fmt: skip
        options = parse_background_options(body)
        tools = _function_tools(body.get("tools"))
        parent = self._parent(body, now)
        ident = new_id("resp_", hex_chars=50)
        job = self.world.new_job(
            ident, now, expires=False, plan_from=parent.job if parent else None
        )
        if not background:
            # Foreground requests answer when the work is done; the simulator skips the wait.
            job.running_at = job.done_at = now
        else:
            job.window = options.window
            job.prioritized = self._continues(body, options)
            place_in_window(job, job.window, job.prioritized, self.world.scenario, self.world.rng)
        if segment is not None:
            job.charge(segment)
        resp = _Response(job, body, _prompt_of(body.get("input")), background, tools, options)
        if job.rounds_left > 0:
            resp.calls = [
                {
                    "id": new_id("fc_", hex_chars=50),
                    "type": "function_call",
                    "call_id": new_id("call_"),
                    "name": name,
                    "arguments": args,
                    "status": "completed",
                }
                for name, args in self.world.draw_calls(tools)
            ]
        self.items[ident] = resp
        return self.body(resp, now)

    def _parent(self, body: dict[str, Any], now: float) -> _Response | None:
        prev_id = body.get("previous_response_id")
        outputs = _call_outputs(body.get("input"))
        if prev_id is None:
            if outputs:
                raise SimError(
                    400, f"No tool call found for function call output with call_id {outputs[0]}.",
                    param="input",
                )  # fmt: skip
            return None
        try:
            prev = self._get(str(prev_id), now)
        except SimError:
            raise SimError(
                400, f"Previous response with id '{prev_id}' not found.",
                param="previous_response_id", code="previous_response_not_found",
            ) from None  # fmt: skip
        status, _ = prev.job.status_at(now)
        if status not in TERMINAL:
            raise SimError(
                400, f"Previous response '{prev_id}' is still {status.value}; wait for it.",
                param="previous_response_id",
            )  # fmt: skip
        pending = [c["call_id"] for c in prev.calls] if status is JobStatus.COMPLETED else []
        for call_id in outputs:
            if call_id not in pending:
                raise SimError(
                    400, f"No tool call found for function call output with call_id {call_id}.",
                    param="input",
                )  # fmt: skip
        missing = [c for c in pending if c not in outputs]
        if missing:
            raise SimError(
                400, f"No tool output found for function call {missing[0]}.", param="input"
            )
        return prev if pending else None

    def _continues(self, body: dict[str, Any], options: BackgroundOptions) -> bool:
        """Return whether a create follows its previous response in the same continuation."""
        prev = self.items.get(str(body.get("previous_response_id")))
        return (
            prev is not None
            and options.continues(prev.options)
            and prev.request.get("model") == body.get("model")
        )

    def _get(self, ident: str, now: float) -> _Response:
        resp = self.items.get(ident)
        if resp is None:
            raise not_found("response", ident)
        ttl = self.world.scenario.lifecycle.response_ttl
        if ttl is not None and now > resp.job.created + ttl:
            del self.items[ident]
            raise not_found("response", ident)
        return resp

    def retrieve(self, ident: str, now: float) -> tuple[dict[str, Any], Job]:
        """Return a response as it is at ``now``, recording the poll for detection latency."""
        resp = self._get(ident, now)
        resp.job.observe(now)
        return self.body(resp, now), resp.job

    def cancel(self, ident: str, now: float) -> dict[str, Any]:
        """Cancel a background response; cancelling a finished one changes nothing."""
        resp = self._get(ident, now)
        if not resp.background:
            raise SimError(400, "Only responses created with background=true can be cancelled.")
        status, _ = resp.job.status_at(now)
        if status not in TERMINAL:
            resp.job.cancel(now, 0.0)
        return self.body(resp, now)

    def body(self, resp: _Response, now: float) -> dict[str, Any]:
        """Return the JSON of a ``Response`` with every field the SDK's model knows."""
        job = resp.job
        status, since = job.status_at(now)
        req = resp.request
        output: list[dict[str, Any]] = []
        error = incomplete = usage = None
        if status is JobStatus.COMPLETED:
            output = resp.calls or [self._message(resp, "completed")]
        elif status is JobStatus.INCOMPLETE:
            output = [self._message(resp, "incomplete")]
            incomplete = {"reason": "max_output_tokens"}
        elif status is JobStatus.FAILED:
            code = job.plan.error_code or "server_error"
            error = {"code": code, "message": _FAILURES.get(code, "The model failed.")}
        if status in (JobStatus.COMPLETED, JobStatus.INCOMPLETE):
            usage = response_usage(job)
        out = {
            "id": job.id,
            "object": "response",
            "created_at": int(self.epoch + job.created),
            "status": status.value,
            "background": resp.background,
            "completed_at": int(self.epoch + since) if status is JobStatus.COMPLETED else None,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "max_tool_calls": req.get("max_tool_calls"),
            "model": req["model"],
            "output": output,
            "parallel_tool_calls": bool(req.get("parallel_tool_calls", True)),
            "previous_response_id": req.get("previous_response_id"),
            "prompt": None,
            "prompt_cache_key": req.get("prompt_cache_key"),
            "prompt_cache_retention": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": req.get("safety_identifier"),
            "service_tier": "default",
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": resp.tools,
            "top_logprobs": req.get("top_logprobs", 0),
            "top_p": req.get("top_p", 1.0),
            "truncation": req.get("truncation", "disabled"),
            "usage": usage,
            "user": req.get("user"),
            "metadata": req.get("metadata") or {},
            "access_programs": None,
            "conversation": None,
            "image": None,
            "input_transformations": None,
            "moderation": None,
            "prompt_cache_diagnostics": None,
            "prompt_cache_options": None,
            "tool_usage": None,
        }
        if self.world.scenario.windows.echo and resp.options.window is not None:
            # Off by default: SDK 3.57's Response declares no such field (see Windows.echo).
            out["background_options"] = {
                "completion_window": resp.options.window,
                "continuation_id": resp.options.continuation_id,
            }
        return out

    def _message(self, resp: _Response, status: str) -> dict[str, Any]:
        text = self.world.scenario.reply.replace("{prompt}", resp.prompt[:200])
        if status == "incomplete":
            text = text[: max(1, len(text) // 2)]
        return {
            "id": "msg_" + resp.job.id.removeprefix("resp_"),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }


_FAILURES = {
    "server_error": "The server had an error while processing your request. Sorry about that!",
    "rate_limit_exceeded": "Rate limit reached while generating the response.",
}


def _function_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise SimError(400, "Invalid type for 'tools': expected an array.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise SimError(400, f"Invalid value for 'tools[{i}]'.", param=f"tools[{i}]")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                raise SimError(
                    400, f"Missing required parameter: 'tools[{i}].name'.", param=f"tools[{i}].name"
                )
            out.append(
                {
                    "type": "function",
                    "name": tool["name"],
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters") or {},
                    "strict": tool.get("strict", True),
                }
            )
        else:
            out.append(dict(tool))
    return out


def _call_outputs(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [
        str(item.get("call_id"))
        for item in items
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]


def _prompt_of(items: Any) -> str:
    if items is None:
        return ""
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                content = item.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    texts = [c.get("text", "") for c in content if isinstance(c, dict)]
                    return " ".join(t for t in texts if isinstance(t, str))
        if _call_outputs(items):
            return "tool outputs"
        return ""
    raise SimError(400, "Invalid type for 'input': expected a string or an array.", param="input")
