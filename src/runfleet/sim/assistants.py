"""Assistants (legacy): threads, messages and runs with ``requires_action`` tool rounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .lifecycle import TERMINAL, Job, JobStatus, Segment
from .paging import listing, paged
from .tokens import run_usage
from .world import SimError, World, new_id, not_found

__all__ = ["AssistantStore"]


@dataclass(slots=True)
class _Message:
    id: str
    created: float
    role: str
    text: str
    run_id: str | None = None
    assistant_id: str | None = None
    status: str = "completed"


@dataclass(slots=True)
class _Thread:
    id: str
    created: float
    metadata: dict[str, Any]
    messages: list[_Message] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    replied: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Run:
    job: Job
    thread_id: str
    assistant_id: str
    request: dict[str, Any]
    tools: list[dict[str, Any]]
    # The round just answered, still shown while its outputs sink in (scenario submit_lag).
    prev_calls: list[dict[str, Any]] = field(default_factory=list)


class AssistantStore:
    """Threads and runs of one simulated account."""

    def __init__(self, world: World, epoch: float) -> None:
        self.world = world
        self.epoch = epoch
        self.threads: dict[str, _Thread] = {}
        self.runs: dict[str, _Run] = {}

    def jobs(self) -> list[Job]:
        """Return every run's job, for the stats endpoint."""
        return [r.job for r in self.runs.values()]

    # threads and messages

    def create_thread(self, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Create a thread, optionally with initial messages."""
        thread = self._new_thread(body, now)
        return self._thread_body(thread)

    def _new_thread(self, body: dict[str, Any], now: float) -> _Thread:
        thread = _Thread(new_id("thread_"), now, _metadata(body))
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise SimError(400, "Invalid type for 'messages': expected an array.", param="messages")
        for i, msg in enumerate(messages):
            thread.messages.append(_parse_message(msg, now, f"messages[{i}]"))
        self.threads[thread.id] = thread
        return thread

    def retrieve_thread(self, thread_id: str) -> dict[str, Any]:
        """Return a thread."""
        return self._thread_body(self._thread(thread_id))

    def create_message(self, thread_id: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Add a message; refused while a run is active on the thread, as OpenAI does."""
        thread = self._thread(thread_id)
        active = self._active_run(thread, now)
        if active is not None:
            raise SimError(
                400, f"Can't add messages to {thread_id} while a run {active} is active.",
            )  # fmt: skip
        msg = _parse_message(body, now, "")
        thread.messages.append(msg)
        return self._message_body(thread, msg)

    def list_messages(self, thread_id: str, query: dict[str, str], now: float) -> dict[str, Any]:
        """List messages, newest first by default, with ``run_id``/``limit``/cursor filters."""
        thread = self._thread(thread_id)
        self._settle(thread, now)
        msgs = thread.messages
        if run_id := query.get("run_id"):
            msgs = [m for m in msgs if m.run_id == run_id]
        page, more = paged(msgs, query, lambda m: m.id)
        return listing([self._message_body(thread, m) for m in page], more)

    def list_runs(self, thread_id: str, query: dict[str, str], now: float) -> dict[str, Any]:
        """List a thread's runs, newest first by default (how a client finds its own copy of
        an ambiguous create: by the nonce in its metadata)."""
        thread = self._thread(thread_id)
        page, more = paged([self.runs[r] for r in thread.runs], query, lambda r: r.job.id)
        return listing([self._run_body(r, now) for r in page], more)

    # runs

    def thread_texts(self, thread_id: str) -> list[str]:
        """Return what a run started on the thread reads (nothing for an unknown thread)."""
        thread = self.threads.get(thread_id)
        return [m.text for m in thread.messages] if thread else []

    def run_request(self, run_id: str) -> dict[str, Any]:
        """Return the body a run was started with (empty for an unknown run)."""
        run = self.runs.get(run_id)
        return run.request if run else {}

    def create_run(
        self, thread_id: str, body: dict[str, Any], now: float, segment: Segment | None = None
    ) -> dict[str, Any]:
        """Start a run on a thread; a second active run on one thread is a 400."""
        thread = self._thread(thread_id)
        active = self._active_run(thread, now)
        if active is not None:
            raise SimError(400, f"Thread {thread_id} already has an active run {active}.")
        extra = body.get("additional_messages") or []
        if not isinstance(extra, list):
            raise SimError(
                400, "Invalid type for 'additional_messages'.", param="additional_messages"
            )
        for i, msg in enumerate(extra):
            thread.messages.append(_parse_message(msg, now, f"additional_messages[{i}]"))
        return self._start(thread, body, now, segment)

    def create_thread_and_run(
        self, body: dict[str, Any], now: float, segment: Segment | None = None
    ) -> dict[str, Any]:
        """Create a thread with its messages and start a run on it in one request."""
        spec = body.get("thread") or {}
        if not isinstance(spec, dict):
            raise SimError(400, "Invalid type for 'thread': expected an object.", param="thread")
        _assistant_of(body)  # validate before creating anything
        return self._start(self._new_thread(spec, now), body, now, segment)

    def _start(
        self, thread: _Thread, body: dict[str, Any], now: float, segment: Segment | None
    ) -> dict[str, Any]:
        assistant_id = _assistant_of(body)
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise SimError(400, "Invalid type for 'tools': expected an array.", param="tools")
        job = self.world.new_job(new_id("run_"), now, expires=True)
        if segment is not None:
            job.charge(segment)
        run = _Run(job, thread.id, assistant_id, body, tools)
        self._draw_round(run)
        self.runs[job.id] = run
        thread.runs.append(job.id)
        return self._run_body(run, now)

    def _draw_round(self, run: _Run) -> None:
        if run.job.rounds_left <= 0:
            run.job.tool_calls = []
            return
        run.job.tool_calls = [
            {"id": new_id("call_"), "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in self.world.draw_calls(run.tools)
        ]

    def retrieve_run(self, thread_id: str, run_id: str, now: float) -> tuple[dict[str, Any], Job]:
        """Return a run as it is at ``now``, recording the poll for detection latency."""
        run = self._run(thread_id, run_id)
        run.job.observe(now)
        return self._run_body(run, now), run.job

    def submit_tool_outputs(
        self,
        thread_id: str,
        run_id: str,
        body: dict[str, Any],
        now: float,
        segment: Segment | None = None,
    ) -> dict[str, Any]:
        """Accept one round's outputs; refused outside ``requires_action`` or on a mismatch."""
        run = self._run(thread_id, run_id)
        job = run.job
        status, _ = job.status_at(now)
        if status is not JobStatus.REQUIRES_ACTION:
            raise SimError(400, f'Runs in status "{status.value}" do not accept tool outputs.')
        if now < job.lag_until:
            raise SimError(400, f"Tool outputs for run {run_id} were already submitted.")
        outputs = body.get("tool_outputs")
        if not isinstance(outputs, list) or not outputs:
            raise SimError(400, "Missing required parameter: 'tool_outputs'.", param="tool_outputs")
        got = []
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("tool_call_id"), str):
                raise SimError(
                    400, f"Missing required parameter: 'tool_outputs[{i}].tool_call_id'.",
                    param=f"tool_outputs[{i}].tool_call_id",
                )  # fmt: skip
            got.append(out["tool_call_id"])
        expected = [c["id"] for c in job.tool_calls]
        unknown = [c for c in got if c not in expected]
        if unknown:
            raise SimError(400, f"Invalid tool_call_id: {unknown[0]}.", param="tool_outputs")
        if sorted(got) != sorted(expected):
            raise SimError(
                400, f"Expected tool outputs for call_ids {expected}, got {got}.",
                param="tool_outputs",
            )  # fmt: skip
        lc = self.world.scenario
        job.resume(
            now, lc.tools.submit_lag.draw(self.world.rng), lc.lifecycle.resume.draw(self.world.rng)
        )
        if segment is not None:
            job.charge(segment)  # the next pass: charged again, settled when it ends
        run.prev_calls = job.tool_calls
        self._draw_round(run)
        return self._run_body(run, now)

    def cancel_run(self, thread_id: str, run_id: str, now: float) -> dict[str, Any]:
        """Cancel a run: ``cancelling`` for a moment, then ``cancelled``."""
        run = self._run(thread_id, run_id)
        status, _ = run.job.status_at(now)
        if status in TERMINAL:
            raise SimError(400, f"Cannot cancel run with status '{status.value}'.")
        if status is not JobStatus.CANCELLING:
            run.job.cancel(now, self.world.scenario.lifecycle.cancel_delay.draw(self.world.rng))
        return self._run_body(run, now)

    # helpers

    def _thread(self, thread_id: str) -> _Thread:
        thread = self.threads.get(thread_id)
        if thread is None:
            raise not_found("thread", thread_id)
        return thread

    def _run(self, thread_id: str, run_id: str) -> _Run:
        run = self.runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise not_found("run", run_id)
        return run

    def _active_run(self, thread: _Thread, now: float) -> str | None:
        if not thread.runs:
            return None
        status, _ = self.runs[thread.runs[-1]].job.status_at(now)
        return None if status in TERMINAL else thread.runs[-1]

    def _settle(self, thread: _Thread, now: float) -> None:
        """Add the assistant's reply of a run that finished since the thread was last read."""
        if not thread.runs or thread.runs[-1] in thread.replied:
            return
        run = self.runs[thread.runs[-1]]
        status, since = run.job.status_at(now)
        if status not in (JobStatus.COMPLETED, JobStatus.INCOMPLETE):
            return
        thread.replied.add(run.job.id)
        prompt = next((m.text for m in reversed(thread.messages) if m.role == "user"), "")
        text = self.world.scenario.reply.replace("{prompt}", prompt[:200])
        thread.messages.append(
            _Message(
                id=new_id("msg_"), created=since, role="assistant", text=text,
                run_id=run.job.id, assistant_id=run.assistant_id,
                status="completed" if status is JobStatus.COMPLETED else "incomplete",
            )
        )  # fmt: skip

    def _thread_body(self, thread: _Thread) -> dict[str, Any]:
        return {
            "id": thread.id,
            "object": "thread",
            "created_at": int(self.epoch + thread.created),
            "metadata": thread.metadata,
            "tool_resources": {},
        }

    def _message_body(self, thread: _Thread, m: _Message) -> dict[str, Any]:
        return {
            "id": m.id,
            "object": "thread.message",
            "created_at": int(self.epoch + m.created),
            "assistant_id": m.assistant_id,
            "thread_id": thread.id,
            "run_id": m.run_id,
            "role": m.role,
            "content": [{"type": "text", "text": {"value": m.text, "annotations": []}}],
            "attachments": [],
            "metadata": {},
            "status": m.status,
            "completed_at": int(self.epoch + m.created) if m.role == "assistant" else None,
            "incomplete_at": None,
            "incomplete_details": None,
        }

    def _run_body(self, run: _Run, now: float) -> dict[str, Any]:
        job = run.job
        status, since = job.status_at(now)
        req = run.request
        ts = self.epoch

        def at(cond: bool, t: float) -> int | None:
            return int(ts + t) if cond else None

        started = now >= job.running_at or job.lag_until > 0
        action = None
        if status is JobStatus.REQUIRES_ACTION:
            calls = job.tool_calls if now >= job.lag_until else run.prev_calls
            action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}
        last_error = None
        if status is JobStatus.FAILED:
            code = job.plan.error_code or "server_error"
            last_error = {"code": code, "message": f"Simulated {code.replace('_', ' ')}."}
        usage = None
        if status in TERMINAL:
            usage = run_usage(job)
        return {
            "id": job.id,
            "object": "thread.run",
            "created_at": int(ts + job.created),
            "assistant_id": run.assistant_id,
            "thread_id": run.thread_id,
            "status": status.value,
            "started_at": at(started and status is not JobStatus.QUEUED, job.running_at),
            "expires_at": at(status not in TERMINAL, job.expires_at or 0.0),
            "cancelled_at": at(status is JobStatus.CANCELLED, since),
            "failed_at": at(status is JobStatus.FAILED, since),
            "completed_at": at(status is JobStatus.COMPLETED, since),
            "required_action": action,
            "last_error": last_error,
            "model": req.get("model") or "gpt-4o",
            "instructions": req.get("instructions") or "",
            "tools": run.tools,
            "metadata": _metadata(req),
            "usage": usage,
            "temperature": req.get("temperature", 1.0),
            "top_p": req.get("top_p", 1.0),
            "max_prompt_tokens": req.get("max_prompt_tokens"),
            "max_completion_tokens": req.get("max_completion_tokens"),
            "truncation_strategy": {"type": "auto", "last_messages": None},
            "incomplete_details": (
                {"reason": "max_completion_tokens"} if status is JobStatus.INCOMPLETE else None
            ),
            "response_format": req.get("response_format", "auto"),
            "tool_choice": req.get("tool_choice", "auto"),
            "parallel_tool_calls": bool(req.get("parallel_tool_calls", True)),
        }


def _assistant_of(body: dict[str, Any]) -> str:
    assistant_id = body.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise SimError(
            400, "Missing required parameter: 'assistant_id'.", param="assistant_id",
            code="missing_required_parameter",
        )  # fmt: skip
    return assistant_id


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata")
    return dict(meta) if isinstance(meta, dict) else {}


def _parse_message(msg: Any, now: float, where: str) -> _Message:
    prefix = f"{where}." if where else ""
    if not isinstance(msg, dict):
        raise SimError(400, f"Invalid type for '{where or 'body'}': expected an object.")
    role = msg.get("role")
    if role not in ("user", "assistant"):
        raise SimError(
            400, f"Invalid value for '{prefix}role': expected 'user' or 'assistant'.",
            param=f"{prefix}role",
        )  # fmt: skip
    content = msg.get("content")
    if isinstance(content, list):
        parts = [c.get("text") for c in content if isinstance(c, dict)]
        content = " ".join(p for p in parts if isinstance(p, str))
    if not isinstance(content, str):
        raise SimError(
            400, f"Missing required parameter: '{prefix}content'.", param=f"{prefix}content"
        )
    return _Message(id=new_id("msg_"), created=now, role=role, text=content)
