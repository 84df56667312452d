"""How few polls per run any schedule needs on ``ample`` at the classic loop's p95 latency.

The README's bound for Assistants runs (half the classic loop's requests leaves at most 2.04
polls per run) comes from here. Run times are drawn as the ``ample`` scenario draws them
(queued lognormal median 0.5 s, then in progress lognormal median 8 s, both sigma 0.5). The
classic loop (``Backoff()``: 0.5 s x1.5 up to 5 s, +-20 % jitter) sets the p95 detection
latency to keep. Then,
knowing the distribution exactly and with no network time:

- ``best``: the first poll at ``t1`` and every ``g`` after it, searched on a grid; the
  numerical optimum over free poll times lands on this shape (first poll near 8.4 s, then
  gaps of about 4.3 s);
- ``fleet form``: the learned schedule's shape, the first poll one gap after the ``e`` point
  of the distribution, then that gap, every gap jittered by +-20 %, the gap at most 4 s.

    .venv/bin/python benchmarks/poll_bound.py [--runs 200000] [--seed 0]

Needs numpy (installed with ``.[dev]`` or ``.[plot]``).
"""

from __future__ import annotations

import argparse

import numpy as np

from runfleet.polling.schedule import Backoff

CLASSIC = Backoff()
_JITTER = CLASSIC.jitter  # the learned schedule jitters its gaps by the backoff's jitter


def run_times(rng: np.random.Generator, n: int) -> np.ndarray:
    queued = rng.lognormal(np.log(0.5), 0.5, n)
    running = rng.lognormal(np.log(8.0), 0.5, n)
    return np.asarray(queued + running)


def jittered(rng: np.random.Generator, gaps: np.ndarray) -> np.ndarray:
    return np.asarray(gaps * rng.uniform(1 - _JITTER, 1 + _JITTER, gaps.shape))


def classic(times: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Mean polls and p95 latency of the classic loop, jitter included."""
    at = np.zeros_like(times)
    polls = np.zeros_like(times)
    attempt = 0
    while (live := at < times).any():
        delay = CLASSIC.base_delay(attempt)
        step = np.minimum(jittered(rng, np.full(int(live.sum()), delay)), CLASSIC.cap)
        at[live] += step
        polls[live] += 1
        attempt += 1
    return float(polls.mean()), float(np.percentile(at - times, 95))


def evenly(times: np.ndarray, first: float, gap: float) -> tuple[float, float]:
    """Mean polls and p95 latency of polls at ``first + k * gap``."""
    k = np.maximum(np.ceil((times - first) / gap), 0)
    return float((k + 1).mean()), float(np.percentile(first + k * gap - times, 95))


def fleet_form(
    times: np.ndarray, rng: np.random.Generator, early: float, gap: float
) -> tuple[float, float]:
    """Mean polls and p95 latency of the learned schedule's shape with jitter."""
    at = np.quantile(times, early) + gap + gap * rng.uniform(-_JITTER, _JITTER, times.shape)
    polls = np.ones_like(times)
    while (live := at < times).any():
        at[live] += jittered(rng, np.full(int(live.sum()), gap))
        polls[live] += 1
    return float(polls.mean()), float(np.percentile(at - times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    times = run_times(rng, args.runs)

    polls, latency = classic(times, rng)
    print(f"classic     {polls:.2f} polls/run, p95 {latency:.2f} s (the latency to keep)")

    grid = [
        (*evenly(times, first, gap), first, gap)
        for first in np.arange(3.0, 12.0, 0.05)
        for gap in np.arange(2.0, 6.0, 0.05)
    ]
    best = min(g for g in grid if g[1] <= latency)
    print(
        f"best        {best[0]:.2f} polls/run, p95 {best[1]:.2f} s: first {best[2]:.2f} s, "
        f"then every {best[3]:.2f} s"
    )

    forms = [
        (*fleet_form(times, np.random.default_rng(args.seed + 1), early, gap), early, gap)
        for early in (0.02, 0.03, 0.04, 0.05)
        for gap in np.arange(3.0, 4.0001, 0.1)
    ]
    form = min(f for f in forms if f[1] <= latency)
    print(
        f"fleet form  {form[0]:.2f} polls/run, p95 {form[1]:.2f} s: first poll one gap after "
        f"the {form[2]:.0%} point, gap {form[3]:.1f} s, +-20 % jitter"
    )


if __name__ == "__main__":
    main()
