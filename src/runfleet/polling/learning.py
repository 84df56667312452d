"""Poll where runs finish: a per-key model of observed run times, and the schedule it plans.

Its settings are a :class:`~runfleet.polling.policy.PollPolicy`; its lognormal fit and the
check of that fit are :mod:`runfleet.polling.interval_fit`'s.

The classic loop (:class:`~runfleet.polling.schedule.Backoff`) polls a run that takes 8 s at about
0.5, 1.25, 2.4, 4.1, 6.6 and 10.4 s: six requests, the first three long before such a run
finishes. Runs of one model, or of one assistant, take similar times, so :class:`RunTimes`
learns those times per key and, once it has seen enough of them, plans each run's polls in
three phases (times are seconds since the run (re)started):

1. **wait**: no poll before completions become plausible. The first poll goes one gap after
   the point where ``early_share`` (2 %) of runs are done, so that a run finishing before the
   first poll waits at most about one gap for it, like a run finishing inside the window;
   never later than the median, and at least one gap in.
2. **window**: from there to the ``high_quantile`` (95 %) of learned times, polls are evenly
   spaced, so the detection latency of a run that finishes there stays below one gap. The gap
   is ``latency_target`` if set, else ``latency_fraction`` (0.35) of the learned median, widened
   so the window holds at most 10 polls and narrowed so it holds at least 2.
3. **tail**: past that, stragglers and stalls, the gap grows by ``factor`` per poll up to the
   cap, and is never shorter than the classic loop's gap for a run of that age.

Every delay is jittered by ``±jitter`` of its gap, never below ``min_interval`` nor below the
server's poll-after hint, and a window or tail gap never exceeds the cap, jitter included.
Before ``min_samples`` completions of a key are known, its runs get the classic loop exactly
(the fleet then lets a few scouts poll for a cohort of them: :mod:`runfleet.polling.scouting`).
A key of a discounted completion window (``2h``, ``8h``) has its own policy, on the window's
scale (:mod:`runfleet.polling.windows`): its "classic loop" polls minutes apart. Once learned,
the cap is also at least a tenth of the learned median, so runs of minutes are not polled
every 5 s; a window key's first poll stays at the window's first (1/80 of it), since there a
late first poll costs hours.

Where the first poll goes needs care, because the model only sees what its own polls saw. A run seen
done at its first poll says only that it finished before it; a run seen later finished between its
last two polls. So the early point is not read off the samples: the model fits a lognormal (run
times of one model are roughly lognormal) to these intervals by maximum likelihood
(:mod:`runfleet.polling.interval_fit`), whoever's polls bounded them (the classic loop's, a
scout's, a held run's, its own), and reads the 2 % point off the fit. The fit is trusted only
while it predicts what the first polls see: each run is compared with what the fit of the moment
said of its first poll, and when more runs are found done there than predicted (by over 3 points
over the window, or far more than chance among the latest 16), the lower tail is heavier than a
lognormal (many quick failures, a uniform spread) or the runs changed. The model then falls back
to a stochastic approximation that steers the first poll to where about ``low_quantile`` (10 %)
of runs are already done: earlier by most of a step after each run found done there (by half
when the latest runs changed), later by a small one after each that was not, never later than
the learned ``low_quantile``. The same fallback catches runs that got faster.

A batch's first runs start together, and the first seen done are the fastest of them: until
the key's window first fills, the runs of the key still working count as well, as runs that
take at least the age they were last seen working at (:mod:`runfleet.polling.survival`); and
only first polls this schedule placed move its first poll, not a scout's release of a cohort.

Measured against the classic loop by ``benchmarks/learned_race.py`` (:mod:`runfleet.bench.race`:
1,000 runs polled one after another, the model learning online from its own polls; seeds 0-19;
``tests/test_learning.py`` asserts looser bounds on seeds 0-4). For runs of 8 s or more with
moderate spread (fixed, lognormal sigma up to 0.5, uniform 4-12 s): 0.17 to 0.44 times its polls,
with 0.36 to 0.95 of its p95 detection latency. For wide spreads (lognormal sigma 1): 0.56 to
0.82 times its polls, and for short runs (2-3 s) 0.43 to 0.53, latency still lower. For runs
spread uniformly from 0 s, whose lower tail the fit cannot see: 0.45 to 0.53 times its polls,
with a p95 from 0.84 to 1.04 of its own.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from ..stats import quantile
from .comb import cheapest_comb, classic_p95, probe_span
from .completion_sketch import CompletionSketch
from .interval_fit import IntervalFit
from .key_plan import Plan, clamped, gap_cap, plan_for, target_gap
from .latency_guard import LatencyGuard
from .policy import PollPolicy
from .schedule import floor_delay, jittered
from .survival import with_working
from .windows import window_policy, window_span

__all__ = ["RunTimes", "Working"]

K = TypeVar("K", bound=Hashable)
Working = Callable[[], tuple[Sequence[float], float]]
"""Ages at which a key's runs still working were last seen so, and the runs each stands for."""

_START_STEP = 0.5
"""How far one observation moves the first poll, as a fraction of the window's gap."""
_STALL_QUANTILE = 0.99
_COMB_MARGIN = 0.9
"""The comb aims at this share of the classic loop's p95 latency: the estimate is a sample."""
_COMB_FIRST = 10
_COMB_EARLY = 1.0
"""Share of runs a comb may leave done before its first poll: none kept back (a cap at
``low_quantile`` kept the p95 on sharp lower edges but spent 1.2-1.6 times the oracle's polls)."""
_FIRST_PROBES = 8
"""A comb key's first runs once planned are all probed, up to this many probes, so that the
floor is there from the start (uniform 4-12 s, seeds 0-9: 2 over the classic loop's p95
without, up to 1.09 times; 1 with, 1.02). 16 got none over but cost the sigma 0.3 cells of
the grid up to 0.07 of the oracle's polls (``benchmarks/comb_race.py``, ``grid.py``)."""
_SEEN_UNFITTED = 0.5
"""Without a trusted fit, a key is planned only once half the runs in flight and done were
seen done, so that the median at least is not read off the fastest of a cohort."""


class _KeyTimes:
    """Observations and derived plan of one key, and the policy its runs are polled by."""

    __slots__ = (
        "comb", "done", "earliest", "ended", "guard", "intervals", "plan", "policy", "probed",
        "queue", "sketch", "stall_after", "start",
    )  # fmt: skip

    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.done: deque[float] = deque(maxlen=policy.max_samples)
        self.ended = 0  # runs seen done, forgotten ones too
        self.intervals = IntervalFit(policy.max_samples, tolerance=policy.fit_tolerance)
        self.earliest = math.inf
        self.queue: deque[float] = deque(maxlen=policy.max_samples)
        self.start: float | None = None
        self.plan: Plan | None = None
        self.stall_after = policy.stall_unlearned
        self.guard = LatencyGuard(policy.backoff)
        self.sketch = CompletionSketch(policy.max_samples)
        self.comb: tuple[list[float], float, float] | None = None
        self.probed = 0  # probes placed, for the first ones (_FIRST_PROBES)

    @property
    def filling(self) -> bool:
        """Whether the key's first window is still filling: its runs seen done so far came
        first, from cohorts that started together, so they are its quickest."""
        return self.ended <= self.policy.max_samples


class RunTimes(Generic[K]):
    """Learn run times per key and place each run's next poll where it can have changed.

    Keys are opaque and hashable; the fleet uses e.g. ``("responses", model)`` or
    ``("assistants", assistant_id)``. Nothing here reads a clock: the caller passes times
    measured on the event loop's clock, from the moment the run was created or its tool outputs
    were submitted (its (re)start).
    """

    __slots__ = ("_keys", "_policy")

    def __init__(self, policy: PollPolicy | None = None) -> None:
        self._policy = policy if policy is not None else PollPolicy()
        self._keys: OrderedDict[K, _KeyTimes] = OrderedDict()

    @property
    def policy(self) -> PollPolicy:
        """The policy this model was built with."""
        return self._policy

    def next_delay(
        self,
        key: K,
        elapsed: float,
        attempt: int,
        rng: random.Random,
        *,
        poll_after: float | None = None,
    ) -> float:
        """Return the seconds to wait before polling a run of ``key`` again.

        Args:
            key: what the run's times are learned under.
            elapsed: seconds since the run (re)started, at the moment of asking.
            attempt: polls since the run (re)started; only the classic loop uses it, while
                ``key`` is not learned.
            rng: the source of jitter.
            poll_after: the server's latest ``openai-poll-after-ms`` hint in seconds.

        Raises:
            ValueError: if ``elapsed``, ``attempt`` or ``poll_after`` is negative.
        """
        if not elapsed >= 0:
            raise ValueError(f"elapsed must be >= 0 seconds, got {elapsed!r}")
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        times = self._keys.get(key)
        if times is None or times.plan is None:
            backoff = self.policy_for(key).backoff
            return backoff.next_delay(attempt, rng, poll_after=poll_after)
        backoff = times.policy.backoff
        plan, jitter, cap = times.plan, backoff.jitter, times.plan.cap
        if elapsed < plan.tail:
            wait = plan.start - elapsed
            probe = probe_span(plan, backoff.min_interval) if times.comb and not attempt else None
            share = times.policy.probe_share  # all of a key's first probes, if it has any
            share = 1.0 if share and times.probed < _FIRST_PROBES else share
            if probe is not None and elapsed < probe[1] and rng.random() < share:
                times.probed += 1
                delay = rng.uniform(max(probe[0], elapsed), probe[1]) - elapsed
            elif wait > plan.gap:
                # Jitter the first poll by a share of the gap, not of the wait: a long wait
                # jittered by 20 % would land far past the runs it is meant to catch.
                delay = wait + plan.gap * (rng.uniform(-jitter, jitter) if jitter else 0.0)
            else:
                delay = min(jittered(plan.gap, jitter, rng), cap)
        else:
            # Stateless exponential backoff: after polls spaced g, g*f, g*f**2... the next gap
            # is g plus (f - 1) times the time spent in the tail.
            gap = plan.tail_gap + (backoff.factor - 1) * (elapsed - plan.tail)
            # The classic loop's gap while a key's first window fills: its first samples are a
            # cohort's quickest, the learned tail is too early, and its other runs would be
            # polled at short gaps, or past the classic cap at a tenth of the median (m60-s0.3
            # on the simulator: held runs seen 5.4 s late, the classic loop's p95 4.8 s). Past
            # it the floor would only make runs that end late (a drift) wait (offline grid:
            # m1-s1.2 1.33 -> 1.21 of the oracle's polls, drift p95 0.72 -> 0.66 of classic's).
            if times.filling:
                gap, cap = max(gap, backoff.gap_at(elapsed)), min(cap, backoff.cap)
            delay = min(jittered(min(gap, cap), jitter, rng), cap)
        return floor_delay(delay, backoff.min_interval, poll_after)

    def observe_done(
        self,
        key: K,
        seconds: float,
        *,
        first_poll: bool,
        previous: float | None = None,
        first_at: float | None = None,
        working: Working | None = None,
        planned: bool = True,
    ) -> None:
        """Learn that a run of ``key`` was seen done (terminal or needing the client).

        Args:
            key: what the run's times are learned under.
            seconds: from the run's (re)start to the poll (or webhook) that saw it done.
            first_poll: ``True`` if the first poll of this (re)start, made when this model
                asked, already found the run done; ``False`` otherwise, and when a webhook or a
                wake-up prompted the poll. Required because it is what keeps the first poll
                honest: such a run only says it finished before that poll.
            previous: seconds from the (re)start to the last poll that found the run still
                working, so the run finished between the two; ``None`` when ``seconds`` is
                already close to when it finished (a webhook said so) or is not known.
            first_at: seconds from the (re)start to the first poll of this (re)start, whoever
                placed it; ``None`` if not known or if a webhook prompted it. It is what the
                fit's prediction of runs found done at the first poll is checked against.
            working: returns the ages at which the key's runs still working were last seen
                so, and how many runs each stands for; asked only while every run seen done
                is remembered (:mod:`.survival`).
            planned: whether this phase's first poll was placed by the key's learned schedule.
                Only then does a run found done there steer the first poll (a scout's release
                polls a held cohort at one age: fifteen found done at once pulled the first
                poll of 4 s runs down to 1.7 s) and its gap feed the latency guard.

        Raises:
            ValueError: if ``seconds``, ``previous`` or ``first_at`` is negative or not finite.
        """
        _check_seconds(seconds)
        for given in (previous, first_at):
            if given is not None:
                _check_seconds(given)
        times = self._touch(key)
        policy = times.policy
        if times.plan is not None and planned and not first_poll and previous is not None:
            times.guard.observe(seconds, seconds - min(previous, seconds))
        times.done.append(seconds)
        times.ended += 1
        times.earliest = min(times.earliest, seconds)
        since = None if first_poll else seconds if previous is None else min(previous, seconds)
        times.intervals.add(since, seconds, first_at)
        plan = times.plan if planned and times.comb else None
        window = probe_span(plan, policy.backoff.min_interval) if plan else None
        probe = first_at if window and first_at is not None and first_at < window[1] else None
        if policy.comb and times.sketch.add(since, seconds, probe, watch=not times.filling):
            times.done.clear()
            times.done.extend(high for _, high in times.sketch.samples)
        if len(times.done) < (
            min(policy.min_samples, _COMB_FIRST) if policy.comb else policy.min_samples
        ):
            return
        if policy.comb and policy.latency_target is None and window_span(self._policy, key) is None:
            fresh = times.filling and times.sketch.fresh()  # working() samples the runs in flight
            cohort = working() if working is not None and fresh else None
            fit, tally = times.intervals.refit(*(cohort or ())), times.intervals.predicted
            excess = max(0.0, tally.done - tally.expected) / max(tally.done, 1)
            points = (
                times.sketch.points(fit.done_by, excess, cohort, fit.beyond)
                if fit
                else times.sketch.points(working=cohort)
            )
            if points is not None:
                times.plan = _comb_plan(times, points)
                times.start = times.plan.start
                return
        ages: Sequence[float] = ()
        weight = 1.0
        if working is not None and times.filling:
            ages, weight = working()
        fit = times.intervals.refit(ages, weight)
        trusted = fit is not None and fit.surprise is None
        values, seen = with_working(sorted(times.done), ages, weight)
        if seen < _SEEN_UNFITTED and not trusted:
            return  # most of a cohort still working, and no fit to say how long: wait for it
        low = quantile(values, policy.low_quantile)
        if fit is not None and trusted:
            early = fit.quantile(policy.early_share)
            median = fit.quantile(0.5)
            squeeze = times.guard.squeeze
            gap = clamped(
                policy, squeeze * target_gap(policy, values), squeeze * gap_cap(policy, values)
            )
            times.start = min(early + gap, median)
        elif times.start is None or times.plan is None:
            times.start = low
        else:
            # Robbins-Monro step towards the point where a low_quantile share of runs is done
            # at the first poll: down by most of a step when the first poll was late, up by a
            # small one when it was not. It steps from where the first poll really was (a start
            # under one gap is polled at the gap), and the learned quantile caps it.
            late = 1.0 if first_poll else 0.0
            gap = times.plan.gap
            first = max(times.start, gap)
            step = _START_STEP * gap * (policy.low_quantile - late) if planned else 0.0
            if planned and first_poll and fit is not None and fit.surprise == "recent":
                step = min(step, -first / 2)  # the runs changed: halve, don't creep
            times.start = min(first + step, low)
        if window_span(self._policy, key) is None:
            times.plan = plan_for(policy, values, times.start, times.guard.squeeze)
            return
        # In a discounted window the wait before the first poll is hours, so a start read off
        # a biased fit costs hours of latency (on `overnight`, 500 runs under load: a p95 of
        # 10 % of the window at 5 polls per run). Such a key polls from the window's own first
        # poll on, at the learned gap but never past the window's cap (1/32 of it), whatever
        # the learned median: no run waits more than one such gap to be seen done.
        times.start = min(times.start, policy.backoff.initial)
        plan = plan_for(policy, values, times.start, times.guard.squeeze)
        cap = policy.backoff.cap
        most = cap * (1 - policy.backoff.jitter)
        times.plan = Plan(
            plan.start, min(plan.gap, most), plan.tail, min(plan.tail_gap, most), min(plan.cap, cap)
        )

    def is_learned(self, key: K) -> bool:
        """Return whether runs of ``key`` get the learned schedule (not the classic loop)."""
        times = self._keys.get(key)
        return times is not None and times.plan is not None

    def earliest_done(self, key: K) -> float | None:
        """Return the youngest age at which a run of ``key`` was seen done, if one was."""
        times = self._keys.get(key)
        return None if times is None or times.earliest == math.inf else times.earliest

    def observe_queue(self, key: K, seconds: float) -> None:
        """Learn how long a run of ``key`` waited before it was first seen out of ``queued``.

        Raises:
            ValueError: if ``seconds`` is negative or not finite.
        """
        _check_seconds(seconds)
        times = self._touch(key)
        policy = times.policy
        times.queue.append(seconds)
        if len(times.queue) >= policy.min_samples:
            q99 = quantile(sorted(times.queue), _STALL_QUANTILE)
            times.stall_after = max(policy.stall_factor * q99, policy.stall_floor)

    def is_stalled(self, key: K, queued_for: float) -> bool:
        """Return whether a run of ``key`` queued for ``queued_for`` seconds looks stuck.

        Before ``min_samples`` queue waits of the key are known, only ``stall_unlearned``
        applies; after, ``stall_factor`` times the learned 99th percentile, at least
        ``stall_floor``.
        """
        times = self._keys.get(key)
        limit = self.policy_for(key).stall_unlearned if times is None else times.stall_after
        return queued_for > limit

    def policy_for(self, key: K) -> PollPolicy:
        """Return the policy runs of ``key`` are polled by: the model's, or for a key of a
        discounted completion window, one on that window's scale (:mod:`.windows`)."""
        times = self._keys.get(key)
        return times.policy if times is not None else window_policy(self._policy, key)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        learned = sum(times.plan is not None for times in self._keys.values())
        return f"<RunTimes keys={len(self._keys)} learned={learned}>"

    def _touch(self, key: K) -> _KeyTimes:
        """Return the key's record, created if needed and marked most recently used."""
        times = self._keys.get(key)
        if times is None:
            times = self._keys[key] = _KeyTimes(window_policy(self._policy, key))
            if len(self._keys) > self._policy.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return times


def _comb_plan(times: _KeyTimes, points: list[float]) -> Plan:
    """The cheapest comb at the classic loop's p95 latency on the sketch's points (replanned
    when the sketch refits), every gap narrowed by the latency guard's squeeze; it keeps its
    gap up to the longest run seen, then backs off as the tail does."""
    policy, backoff, squeeze = times.policy, times.policy.backoff, times.guard.squeeze
    if times.comb is None or times.comb[0] is not points:
        latency = _COMB_MARGIN * classic_p95(points, backoff)
        times.comb = (
            points,
            *cheapest_comb(points, latency, backoff.jitter, backoff.min_interval, _COMB_EARLY),
        )
    _, start, gap = times.comb
    gap = max(squeeze * gap, backoff.min_interval)
    cap = max(squeeze * gap_cap(policy, points), gap / (1 - backoff.jitter))
    tail = max(high for _, high in times.sketch.samples)
    return Plan(start=start, gap=gap, tail=tail, tail_gap=gap, cap=cap)


def _check_seconds(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
