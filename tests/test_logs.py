"""runfleet's logs as an application meets them: silent by default, never fatal, on by flag."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from runfleet import PollPolicy, ResponseSpec, tool
from runfleet.engine import routing
from runfleet.errors import RunFailed

from .helpers import StartSim, fleet_on

RUNFLEET = [sys.executable, "-m", "runfleet.cli"]

# An application that configures no logging at all, with a tool that always fails, so that
# runfleet has warnings to give (tool_failed) besides its debug and info events.
APP = """
import asyncio, sys
from openai import AsyncOpenAI
from runfleet import Fleet, PollPolicy, ResponseSpec, tool
from runfleet.sim import serve

@tool
async def get_weather(city: str) -> str:
    '''Current weather for a city.'''
    raise RuntimeError("no weather today")

async def main() -> None:
    out = sys.stderr if "--results-to-stderr" in sys.argv else sys.stdout
    specs = [ResponseSpec("m", f"Weather in city {i}?") for i in range(10)]
    async with serve(sys.argv[1], time_scale=0.01) as sim:
        client = AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
        fast = PollPolicy().scaled(0.01)
        async with Fleet(client, rpm=600_000, tools=[get_weather], policy=fast) as fleet:
            async for handle in fleet.map(specs, max_in_flight=10):
                print(f"result {handle.tag}", file=out)

asyncio.run(main())
"""


def run_app(tmp_path: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return subprocess.run(
        [sys.executable, str(script), *args], text=True, timeout=30, cwd=tmp_path, **kwargs
    )


def test_an_unconfigured_application_keeps_stdout_and_sees_warnings_on_stderr(
    tmp_path: Path,
) -> None:
    result = run_app(tmp_path, "tools", capture_output=True)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(f"result {i}" for i in range(10))
    lines = result.stderr.splitlines()
    assert lines, "no warning reached stderr"
    assert all("[warning" in line and "tool_failed" in line for line in lines), lines[:3]


def test_a_closed_stdout_does_not_end_the_fleet(tmp_path: Path) -> None:
    """A pipe whose reader went away: before, the first debug line ended the fleet."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        result = run_app(
            tmp_path, "ample", "--results-to-stderr", stdout=write, stderr=subprocess.PIPE
        )
    finally:
        os.close(write)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stderr.splitlines()) == sorted(f"result {i}" for i in range(10))


class SinkGone(BrokenPipeError):
    """What this test's handler raises: its own kind, so that its one report is this test's."""


class Exploding(logging.Handler):
    """An application's handler whose sink is broken: every emit raises."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        raise SinkGone(32, "Broken pipe")


@pytest.fixture
def exploding() -> Iterator[Exploding]:
    handler, logger = Exploding(), logging.getLogger("runfleet")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def test_a_handler_that_raises_loses_lines_never_runs(
    start_sim: StartSim, exploding: Exploding, capsys: pytest.CaptureFixture[str]
) -> None:
    @tool
    async def get_weather(city: str) -> str:
        """Current weather for a city."""
        raise RuntimeError("no weather today")  # a warning too, on the error path

    specs = [ResponseSpec("m", f"Weather in city {i}?") for i in range(10)]
    fast = PollPolicy().scaled(0.01)
    async with start_sim("tools") as sim, fleet_on(sim, tools=[get_weather], policy=fast) as fleet:
        handles = [h async for h in fleet.map(specs, max_in_flight=10)]
    assert len(handles) == 10
    for handle in handles:
        assert handle.exception() is None or isinstance(handle.exception(), RunFailed)
    assert exploding.calls > 10  # the events did reach the application's handler
    reported = capsys.readouterr().err
    assert reported.count("runfleet: a log event could not be written") == 1
    assert "SinkGone" in reported


def test_a_disabled_level_runs_no_processor() -> None:
    """A debug line in the poll loop must cost a level check, not a processor chain."""
    seen: list[str] = []

    def count(_: Any, method: str, event: Any) -> Any:
        seen.append(method)
        return event

    logging.getLogger("runfleet").setLevel(logging.WARNING)
    with capture_logs(processors=[count]) as logs:
        routing.log.debug("run_polled", run_id="resp_1")
        routing.log.info("run_finished", run_id="resp_1")
        routing.log.warning("run_stalled", run_id="resp_1")
    assert seen == ["warning"]
    assert logs == [{"event": "run_stalled", "run_id": "resp_1", "log_level": "warning"}]


@pytest.mark.parametrize("command", ["sim", "batch", "bench"])
def test_every_command_takes_the_logging_flags(command: str) -> None:
    result = subprocess.run(
        [*RUNFLEET, command, "--help"], capture_output=True, text=True, timeout=30
    )
    assert "-v, --verbose" in result.stdout
    assert "--log-format {console,json}" in result.stdout


def test_batch_logs_json_on_stderr_at_the_level_asked(tmp_path: Path) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": "hi"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    args = ["--model", "m", "--sim", "ample", "--sim-time-scale", "0.01", "--progress", "off"]
    result = subprocess.run(
        [*RUNFLEET, "batch", str(prompts), "--out", str(out), *args, "-vv", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
    )
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.startswith("items")  # the summary, and only the summary, on stdout
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {e["level"] for e in events} >= {"debug", "info"}
    assert all(e["logger"].startswith("runfleet") and "timestamp" in e for e in events)
    assert any(e["event"] == "run_finished" for e in events)
