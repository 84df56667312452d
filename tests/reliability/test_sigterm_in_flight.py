"""SIGTERM with hundreds of runs in flight: out within the grace, the journal consistent.

What ``docker stop``, Kubernetes and systemd send before SIGKILL. The batch must stop starting
items, give the runs in flight ``--grace`` seconds, hand the rest back to the journal and exit
143 before the supervisor's SIGKILL would land; every item is then either done (its line
written once) or running with its ids (re-attached on resume, never created again). The exit
used to come 1.5-2 s after the grace on an idle machine (12.6 s after a 2 s grace at 500 in
flight under load): timestamps put it after the last line of ``main``, in the interpreter's
teardown collecting the ~200,000 objects the SDK's import made; the batch now freezes them
at exit. The short version (30 in flight, no resume: ``tests/test_batch_resume.py`` resumes
after SIGTERM) runs in ``make test``, the long one (500 in flight, then the resume) in
``make soak``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from ..helpers import StartSim
from ..test_batch_resume import assert_each_once, with_ids
from ..test_batch_support import (
    creates,
    finish,
    journal_states,
    on,
    read_output,
    spawn,
    until,
    write_items,
)

# Runs of 4 to 8 s (x 0.01): all still in flight when the signal lands, some end in the grace.
LONG_RUNS = {
    "lifecycle": {"queued": 1.0, "in_progress": {"dist": "uniform", "low": 400, "high": 800}},
    "outcomes": {"failed": 0.0},
}
GRACE = 2.0
SLACK = 3.0  # handing the runs back and exiting, on a loaded 2-core machine


@pytest.mark.parametrize(
    ("in_flight", "resume"),
    [
        pytest.param(30, False, id="short", marks=pytest.mark.timeout(120)),
        pytest.param(500, True, id="long", marks=[pytest.mark.soak, pytest.mark.timeout(600)]),
    ],
)
async def test_sigterm_with_runs_in_flight_exits_within_the_grace_and_resumes(
    start_sim: StartSim, tmp_path: Path, in_flight: int, resume: bool
) -> None:
    items = in_flight + 50  # some never started
    inp = write_items(tmp_path / "in.jsonl", items)
    out, journal = tmp_path / "out.jsonl", tmp_path / "out.jsonl.journal"
    async with start_sim(LONG_RUNS) as sim:
        args = [str(inp), "--out", str(out), "--model", "m", *on(sim)]
        proc = await spawn([*args, "--max-in-flight", str(in_flight), "--grace", str(GRACE)])
        await until(lambda: with_ids(journal) >= in_flight, within=120)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stopped = await finish(proc)
        took = time.monotonic() - signalled
        states = journal_states(journal)
        print(
            f"\nSIGTERM with {in_flight} in flight: exit {stopped.returncode} after {took:.1f} s "
            f"(grace {GRACE:g} s: {took - GRACE:.1f} s to hand back and exit); journal {states}"
        )
        assert stopped.returncode == 143, stopped.stderr
        assert took < GRACE + SLACK
        assert "submitting" not in states  # every started item has its ids
        assert states.get("done", 0) == len(read_output(out))  # each done line written once
        assert in_flight <= states.get("done", 0) + states.get("running", 0) < items
        if not resume:
            return
        resumed = await finish(await spawn(args), within=150)
        stats = sim.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert creates(stats) == items  # the handed-back runs were re-attached, not created again
    assert_each_once(out, items)
