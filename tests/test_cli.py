"""The ``runfleet`` command as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx2
import pytest

RUNFLEET = [sys.executable, "-m", "runfleet.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNFLEET, *args], capture_output=True, text=True, timeout=30)


def test_sim_refuses_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"quota": {"rpn": 3}}))
    result = run("sim", "--scenario", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"runfleet sim: scenario {bad}: unknown key 'quota.rpn'"
    assert result.stdout == ""


def test_sim_refuses_an_unknown_builtin() -> None:
    result = run("sim", "--scenario", "nope")
    assert result.returncode == 2
    builtins = "ample, faulty, overnight, strict, tight, tokens, tools"
    assert f"not a built-in ({builtins})" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf"])
def test_sim_refuses_a_bad_time_scale(value: str) -> None:
    result = run("sim", "--time-scale", value)
    assert result.returncode == 2
    assert "--time-scale" in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_sim_refuses_a_port_out_of_range_as_the_parser_does(port: str) -> None:
    result = run("sim", "--port", port)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"runfleet sim: error: argument --port: must be 0-65535, got {port}"
    )


def test_sim_reports_a_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("sim", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_sim_serves_until_interrupted() -> None:
    with subprocess.Popen(
        [*RUNFLEET, "sim", "--port", "0", "--scenario", "tight", "--time-scale", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        serve_then_interrupt(proc)
    assert proc.returncode == 130  # the shell's convention for Ctrl-C


def serve_then_interrupt(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "scenario 'tight' (time scale 0.1)" in line
        base = line.split(" on ")[1].strip()
        resp = httpx2.post(
            f"{base}/responses",
            json={"model": "m", "input": "hi", "background": True},
            headers={"authorization": "Bearer sk-x"},
        )
        assert resp.status_code == 200
        assert resp.json()["status"] == "queued"
        stats = httpx2.get(base.removesuffix("/v1") + "/_sim/stats").json()
        assert stats["requests"] == {"responses.create": 1}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


def test_version_comes_from_the_package_metadata() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"runfleet {version('runfleet')}\n"


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "sim" in result.stdout
