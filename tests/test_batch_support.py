"""Shared by the batch tests (no tests here): run ``runfleet batch``, read its files."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runfleet.sim import SimServer

from .helpers import API_KEY

RUNFLEET = [sys.executable, "-m", "runfleet.cli", "batch"]
ROOT = Path(__file__).resolve().parent.parent
CREATES = ("responses.create", "threads.create_and_run")


@dataclass
class Finished:
    """A finished batch process: exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def env(api_key: str | None = API_KEY) -> dict[str, str]:
    """Return the environment of a batch process: our key, no inherited base URL."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    if api_key is not None:
        out["OPENAI_API_KEY"] = api_key
    return out


async def spawn(
    args: Sequence[str], *, api_key: str | None = API_KEY
) -> asyncio.subprocess.Process:
    """Start ``runfleet batch ARGS`` without waiting for it."""
    return await asyncio.create_subprocess_exec(
        *RUNFLEET,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(api_key),
        cwd=ROOT,
    )


async def finish(proc: asyncio.subprocess.Process, within: float = 40) -> Finished:
    """Wait for a batch process; return its status and output."""
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


async def batch(args: Sequence[str], *, api_key: str | None = API_KEY) -> Finished:
    """Run ``runfleet batch ARGS`` to its end."""
    return await finish(await spawn(args, api_key=api_key))


async def kill_9_when(
    args: Sequence[str], predicate: Callable[[], bool], within: float = 20.0
) -> None:
    """Start ``runfleet batch ARGS`` and ``kill -9`` it once ``predicate()`` holds."""
    proc = await spawn(args)
    try:
        await until(predicate, within)
    finally:
        proc.kill()
        await finish(proc)


def write_items(path: Path, count: int, prefix: str = "item") -> Path:
    """Write ``count`` valid input lines."""
    lines = [json.dumps({"id": f"{prefix}{i}", "prompt": f"question {i}"}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    """Return every line of an output file, each parsed (a torn line fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def journal_states(path: Path) -> dict[str, int]:
    """Return the journal's items by state (empty while it does not exist yet)."""
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall()
    except sqlite3.OperationalError:  # created but its schema not yet committed
        return {}
    return dict(rows)


async def until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Wait until ``predicate()`` holds, checking the state it reads every 20 ms."""
    async with asyncio.timeout(within):
        # The state is another process's file: there is no event to wait on, only a look.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def creates(stats: dict[str, Any]) -> int:
    """Count the runs created on the simulator (both kinds)."""
    return sum(stats["requests"].get(name, 0) for name in CREATES)


def on(sim: SimServer) -> list[str]:
    """Return the arguments that point a batch at a simulator, its time scale included."""
    return ["--base-url", sim.base_url, "--sim-time-scale", str(sim.app.scenario.time_scale)]
