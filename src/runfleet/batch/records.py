"""The typed records of a batch: an input item, an invalid input line, and an output line.

Session, journal, files and report pass these, never dicts read back by string keys. The
JSON object of an :class:`OutputLine` (``data()``) is what the output file and the journal
hold; its keys and their order are the file format users parse, so they do not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RunError, RunFailed, RunfleetError, RunIncomplete, RunRejected
from ..results import RunFigures, RunResult, TokenUsage

__all__ = ["INVALID", "BatchItem", "InvalidLine", "OutputLine", "ToolExchange"]

# The statuses of lines that never became a run: counted apart from runs that failed, since
# the fix is in the input file, not in the server or the prompt.
INVALID = frozenset({"invalid", "duplicate"})


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One prompt of the input: its id (the line number when the line names none)."""

    id: str
    line: int
    prompt: str
    instructions: str | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    completion_window: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """A line that cannot become an item, and why.

    ``first`` is the line that already holds the id when this one repeats it: its record says
    ``duplicate``, so two records that share an id tell at a glance which one ran.
    """

    line: int
    reason: str
    id: str | None = None
    first: int | None = None

    @property
    def message(self) -> str:
        """Return what is wrong, with the line's number (the record's ``error.message``)."""
        return f"line {self.line}: {self.reason}"

    def output(self) -> OutputLine:
        """Return the output line reporting it (status ``invalid``, or ``duplicate``)."""
        duplicate = self.first is not None
        return OutputLine(
            id=self.id if self.id is not None else str(self.line),
            line=self.line,
            status="duplicate" if duplicate else "invalid",
            error_code="duplicate_id" if duplicate else "invalid_input",
            error_message=self.message,
        )


@dataclass(frozen=True, slots=True)
class ToolExchange:
    """One tool call of a run as the output line shows it: what was asked, what was answered."""

    name: str
    arguments: str
    output: str


@dataclass(frozen=True, slots=True)
class OutputLine:
    """What became of one input line: a run's result, its error, or why the line was invalid.

    ``kind`` is None only for an invalid line, which never became a run: its JSON object has
    no run fields. ``figures`` are as written, seconds rounded to the millisecond, so the
    summary counts what the file shows and a line read back from the journal is the same.
    """

    id: str
    line: int
    status: str
    kind: str | None = None
    recreated: bool = False
    recreated_reason: str | None = None  # written only on a recreated line
    resumed: bool = False
    text: str | None = None
    tool_rounds: tuple[tuple[ToolExchange, ...], ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    figures: RunFigures | None = None
    usage: TokenUsage | None = None
    response_id: str | None = None
    thread_id: str | None = None
    run_id: str | None = None
    completion_window: str | None = None  # written only on a line of a 2h or 8h run

    @classmethod
    def of_result(
        cls,
        item: BatchItem,
        result: RunResult,
        *,
        recreated: str | None,
        resumed: bool,
        window: str | None = None,
    ) -> OutputLine:
        """Return the line of an item whose run completed (in ``window``, if discounted)."""
        rounds = tuple(
            tuple(
                ToolExchange(call.name, call.arguments, out.output)
                for call, out in zip(rnd.calls, rnd.outputs, strict=False)
            )
            for rnd in result.tool_rounds
        )
        why = _recreated_why(result.figures, recreated)
        return cls(
            id=item.id,
            line=item.line,
            status=result.status,
            kind=result.kind,
            recreated=why is not None,
            recreated_reason=why,
            resumed=resumed,
            text=result.text,
            tool_rounds=rounds,
            figures=_rounded(result.figures),
            usage=result.usage,
            response_id=result.id if result.kind == "responses" else None,
            thread_id=result.thread_id,
            run_id=result.id if result.kind == "assistants" else None,
            completion_window=_discounted(window),
        )

    @classmethod
    def of_error(
        cls,
        item: BatchItem,
        kind: str,
        error: RunfleetError,
        *,
        recreated: str | None,
        resumed: bool,
        window: str | None = None,
    ) -> OutputLine:
        """Return the line of an item whose run ended without a result (status: its outcome)."""
        run_id = error.run_id if isinstance(error, RunError) and error.run_id != "-" else None
        figures = getattr(error, "figures", None)  # a RunError the fleet tracked carries them
        figures = figures if isinstance(figures, RunFigures) else None
        why = _recreated_why(figures, recreated)
        return cls(
            id=item.id,
            line=item.line,
            status=error.outcome,
            kind=kind,
            recreated=why is not None,
            recreated_reason=why,
            resumed=resumed,
            error_code=_error_code(error),
            error_message=str(error),
            figures=_rounded(figures) if figures is not None else None,
            response_id=run_id if kind == "responses" else None,
            run_id=run_id if kind == "assistants" else None,
            completion_window=_discounted(window),
        )

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> OutputLine:
        """Read back a line's JSON object (as the journal keeps it)."""
        error = data.get("error")
        f = data.get("figures")
        figures = None
        if f is not None:
            figures = RunFigures(
                f["requests"], f["polls"], f["queued_s"], f["running_s"], f["total_s"],
                f["detection_latency_s"],
            )  # fmt: skip
        u = data.get("usage")
        usage = None if u is None else TokenUsage(u["input_tokens"], u["output_tokens"])
        return cls(
            id=str(data["id"]),
            line=int(data["line"]),
            status=str(data["status"]),
            kind=data.get("kind"),
            recreated=bool(data.get("recreated", False)),
            recreated_reason=data.get("recreated_reason"),
            resumed=bool(data.get("resumed", False)),
            text=data.get("text"),
            tool_rounds=tuple(
                tuple(ToolExchange(c["name"], c["arguments"], c["output"]) for c in rnd)
                for rnd in data.get("tool_rounds") or ()
            ),
            error_code=error["code"] if error else None,
            error_message=error["message"] if error else None,
            figures=figures,
            usage=usage,
            response_id=data.get("response_id"),
            thread_id=data.get("thread_id"),
            run_id=data.get("run_id"),
            completion_window=data.get("completion_window"),
        )

    def data(self) -> dict[str, Any]:
        """Return the line's JSON object, keys in the order of the output file."""
        error = None
        if self.error_code is not None or self.error_message is not None:
            error = {"code": self.error_code, "message": self.error_message}
        if self.kind is None:
            return {
                "id": self.id,
                "line": self.line,
                "status": self.status,
                "text": self.text,
                "error": error,
            }
        f = self.figures
        why = {"recreated_reason": self.recreated_reason} if self.recreated else {}
        window = {"completion_window": self.completion_window} if self.completion_window else {}
        return {
            "id": self.id,
            "line": self.line,
            "kind": self.kind,
            "recreated": self.recreated,
            **why,
            "resumed": self.resumed,
            "status": self.status,
            "text": self.text,
            "tool_rounds": [
                [{"name": c.name, "arguments": c.arguments, "output": c.output} for c in rnd]
                for rnd in self.tool_rounds
            ],
            "error": error,
            "figures": None
            if f is None
            else {
                "requests": f.requests,
                "polls": f.polls,
                "queued_s": f.queued,
                "running_s": f.running,
                "total_s": f.total,
                "detection_latency_s": f.detection_latency,
            },
            "usage": None
            if self.usage is None
            else {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "response_id": self.response_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            **window,
        }


def _discounted(window: str | None) -> str | None:
    """The window a line names: a discounted one; ``soonest`` is every line's default."""
    return window if window in ("2h", "8h") else None


def _rounded(f: RunFigures) -> RunFigures:
    """Round a run's seconds to the millisecond, as the output line shows them."""
    return RunFigures(
        f.requests,
        f.polls,
        round(f.queued, 3),
        round(f.running, 3),
        round(f.total, 3),
        round(f.detection_latency, 3),
        f.recreated,
    )


def _recreated_why(figures: RunFigures | None, batch: str | None) -> str | None:
    """Why the item's run may have been created more than once (None: once): the batch's
    word, first known (it stopped mid-create, the run was gone from the server), else the
    fleet's (an ambiguous create, a stall)."""
    if batch is not None:
        return batch
    return figures.recreated if figures is not None else None


def _error_code(error: RunfleetError) -> str:
    """Return the line's ``error.code``: the server's code where there is one, else the outcome."""
    if isinstance(error, RunFailed):
        return error.code or error.outcome
    if isinstance(error, RunIncomplete):
        return error.reason or error.outcome
    if isinstance(error, RunRejected):
        return f"http_{error.status}"
    return error.outcome
