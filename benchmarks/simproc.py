"""Start ``runfleet sim`` in a process of its own, as the benchmarks measure it."""

from __future__ import annotations

import subprocess

from runfleet.sim.server import announced_url, sim_command

__all__ = ["start_sim"]


def start_sim(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the simulator with extra ``runfleet sim`` arguments; return it and its root URL.

    The first line it prints (once the scenario is loaded and the port bound) names the URL.
    """
    proc = subprocess.Popen(sim_command(*args), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if (root := announced_url(line)) is None:
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, root
