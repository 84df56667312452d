"""README's first example, copied as a newcomer copies it, run as its quick start says."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from runfleet.sim.server import announced_url

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS: list[tuple[str, str]] = re.findall(
    r"^```(\w*)\n(.*?)^```", README, re.DOTALL | re.MULTILINE
)


def first_example() -> str:
    return next(code for lang, code in BLOCKS if lang == "python")


def quick_start_sim() -> list[str]:
    """The README's `runfleet sim` line, on a free port so that test workers do not collide."""
    line = next(
        line for _, code in BLOCKS for line in code.splitlines() if line.startswith("runfleet sim")
    )
    args = shlex.split(line.split("#")[0])[2:]
    if "--port" in args:
        del args[args.index("--port") : args.index("--port") + 2]
    return [sys.executable, "-m", "runfleet.cli", "sim", *args, "--port", "0"]


def test_the_first_example_prints_only_its_own_lines_within_a_minute(tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(first_example())
    runs = int(re.findall(r"range\((\d+)\)", first_example())[0])
    with subprocess.Popen(
        quick_start_sim(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as sim:
        try:
            assert sim.stdout is not None
            root = announced_url(sim.stdout.readline())
            assert root, "runfleet sim did not announce its address"
            env = {**os.environ, "OPENAI_BASE_URL": f"{root}/v1", "OPENAI_API_KEY": "sk-sim"}
            result = subprocess.run(
                [sys.executable, str(example)],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            sim.send_signal(signal.SIGINT)
            sim.wait(timeout=15)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    own = re.compile(r"(\d+) (Simulated reply to: .* \d+ polls|failed: .+)")
    strangers = [line for line in lines if not own.fullmatch(line)]
    assert not strangers, f"{len(strangers)} lines not the example's own, first: {strangers[0]}"
    assert sorted(int(line.split()[0]) for line in lines) == list(range(runs))
