"""Start ``runfleet sim`` in a process of its own, as the benchmarks measure it."""

from __future__ import annotations

import re
import subprocess
import sys

__all__ = ["start_sim"]


def start_sim(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the simulator with extra ``runfleet sim`` arguments; return it and its root URL.

    The first line it prints (once the scenario is loaded and the port bound) names the URL.
    """
    cmd = [sys.executable, "-m", "runfleet.cli", "sim", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not (match := re.search(r"(http://\S+)/v1", line)):
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, match.group(1)
