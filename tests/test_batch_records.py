"""The typed output line: the exact JSON users parse, its outcome words, its way back."""

from __future__ import annotations

import pytest

from runfleet import (
    AuthError,
    QuotaExhausted,
    RunCancelled,
    RunError,
    RunExpired,
    RunFailed,
    RunfleetError,
    RunIncomplete,
    RunNotFound,
    RunRejected,
    RunTimeout,
    ToolError,
)
from runfleet.batch.files import encode_line
from runfleet.batch.records import BatchItem, InvalidLine, OutputLine
from runfleet.batch.report import Tally
from runfleet.results import RunFigures, RunResult, TokenUsage, ToolRound
from runfleet.tools import ToolCall, ToolOutput

ITEM = BatchItem("q1", 3, "Weather in Oslo?")
FIGURES = RunFigures(5, 3, 0.12345, 1.00049, 1.1239, 0.0004)


def test_a_completed_line_is_written_byte_for_byte_as_before() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    result = RunResult(
        kind="responses",
        id="resp_2",
        status="completed",
        text="Sunny ☀",
        raw=None,
        tool_rounds=(ToolRound((call,), (ToolOutput("call_1", "sunny"),)),),
        figures=FIGURES,
        usage=TokenUsage(12, 30),
    )
    line = OutputLine.of_result(ITEM, result, recreated=None, resumed=True)
    assert OutputLine.from_data(line.data()) == line
    assert encode_line(line) == (
        '{"id":"q1","line":3,"kind":"responses","recreated":false,"resumed":true,'
        '"status":"completed","text":"Sunny ☀","tool_rounds":[[{"name":"get_weather",'
        '"arguments":"{\\"city\\": \\"Oslo\\"}","output":"sunny"}]],"error":null,'
        '"figures":{"requests":5,"polls":3,"queued_s":0.123,"running_s":1.0,"total_s":1.124,'
        '"detection_latency_s":0.0},"usage":{"input_tokens":12,"output_tokens":30,'
        '"total_tokens":42},"response_id":"resp_2","thread_id":null,"run_id":null}\n'
    )


def test_an_invalid_line_keeps_its_short_shape() -> None:
    line = InvalidLine(7, "not JSON", "x").output()
    assert encode_line(line) == (
        '{"id":"x","line":7,"status":"invalid","text":null,'
        '"error":{"code":"invalid_input","message":"line 7: not JSON"}}\n'
    )


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RunTimeout("run_1", 5), "timed_out", "timed_out"),
        (RunCancelled("run_1"), "cancelled", "cancelled"),
        (RunExpired("run_1"), "expired", "expired"),
        (RunIncomplete("run_1", "max_output_tokens"), "incomplete", "max_output_tokens"),
        (RunNotFound("run_1"), "not_found", "not_found"),
        (RunRejected(400, "bad model"), "rejected", "http_400"),
        (ToolError("run_1", "get_weather", "boom"), "tool_error", "tool_error"),
        (RunFailed("run_1", "server_error", "oops"), "failed", "server_error"),
        (RunFailed("run_1", None, None), "failed", "failed"),
        (QuotaExhausted("429s for 10 minutes"), "quota_exhausted", "quota_exhausted"),
        (RunfleetError("the poll loop failed"), "error", "error"),
    ],
)
def test_an_error_line_says_the_errors_outcome(
    error: RunfleetError, status: str, code: str
) -> None:
    line = OutputLine.of_error(ITEM, "assistants", error, recreated="gone", resumed=False)
    data = line.data()
    assert (data["status"], data["error"]["code"]) == (status, code)
    assert data["error"]["message"] == str(error)
    named = isinstance(error, RunError) and not isinstance(error, RunRejected)  # "-": no run
    assert (data["response_id"], data["run_id"]) == (None, "run_1" if named else None)
    assert list(data) == [
        "id", "line", "kind", "recreated", "recreated_reason", "resumed", "status", "text",
        "tool_rounds",
        "error", "figures", "usage", "response_id", "thread_id", "run_id",
    ]  # fmt: skip


def test_an_error_line_names_the_run_and_its_figures() -> None:
    error = RunFailed("resp_9", "server_error", "oops")
    error.figures = FIGURES
    data = OutputLine.of_error(ITEM, "responses", error, recreated=None, resumed=False).data()
    assert (data["response_id"], data["run_id"]) == ("resp_9", None)
    assert data["figures"]["total_s"] == 1.124
    assert OutputLine.of_error(ITEM, "responses", AuthError(401, "1234", "no"), recreated=None,
                               resumed=False).response_id is None  # fmt: skip


@pytest.mark.parametrize(
    "line",
    [
        OutputLine.of_error(ITEM, "responses", RunRejected(400, "x"), recreated="x", resumed=True),
        InvalidLine(2, "duplicate id 'q1'", "q1").output(),
        OutputLine("q1", 3, "completed", kind="assistants", text="é", thread_id="thread_1",
                   run_id="run_1", figures=RunFigures(2, 1, 0.5, 1.25, 1.75, 0.125)),
    ],
)  # fmt: skip
def test_a_line_read_back_from_its_json_is_the_same_line(line: OutputLine) -> None:
    again = OutputLine.from_data(line.data())
    assert again == line
    assert encode_line(again) == encode_line(line)


def test_the_tally_counts_typed_lines() -> None:
    tally = Tally(total=3)
    done = OutputLine("a", 1, "completed", kind="responses", recreated=True, figures=FIGURES)
    tally.add(done, classic=9)
    tally.add(InvalidLine(2, "not JSON").output())
    assert (tally.done, tally.failed, tally.invalid, tally.recreated) == (2, 0, 1, 1)
    assert (tally.classic, tally.fleet_for_classic, tally.latencies) == (9, 5, [1.1239])
