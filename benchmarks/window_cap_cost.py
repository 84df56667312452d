"""What the per-second check costs each admission (``admission/window_cap.py``).

Every request the quota admits asks :class:`WindowCap` first when a per-second share is set or
learned, polls included, so its cost is paid per request. It is a deque of admission times:
``wait`` drops the ones past the window and compares a length. Measured in a loop, admitted
(``wait`` then ``take``) and refused (``wait`` on a full log):

    .venv/bin/python benchmarks/window_cap_cost.py [--checks 200000]
"""

from __future__ import annotations

import argparse
import time

from runfleet.admission.window_cap import WindowCap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=200_000)
    n = parser.parse_args().checks
    cap, now = WindowCap(10, 1.0, 0.25), 0.0
    started = time.perf_counter()
    for _ in range(n):
        now += 0.13  # under the share: every check admits
        if cap.wait(now) == 0.0:
            cap.take(now)
    admitted = (time.perf_counter() - started) / n
    full = WindowCap(10, 1.0, 0.25)
    for _ in range(10):
        full.take(0.0)
    started = time.perf_counter()
    for _ in range(n):
        full.wait(0.5)
    refused = (time.perf_counter() - started) / n
    print(f"admitted (wait + take): {admitted * 1e9:.0f} ns", end=", ")
    print(f"refused (wait): {refused * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
