"""When each tracked run is polled next: the heap, the learned schedule, scouts, webhooks.

The engine routes what a poll saw; this decides the next due time. A run covered by webhooks
waits on a slow safety-net poll and is woken by its event; any other run follows what
:class:`~runfleet.polling.learning.RunTimes` learned of its key, or, while the key is not
learned, the classic loop thinned by :class:`~runfleet.polling.scouting.Scouting`. Every due
time goes into one :class:`~runfleet.polling.schedule.PollSchedule`, and an earlier head wakes
the loop.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from .learning import RunTimes
from .schedule import PollSchedule, jittered
from .scouting import Scouting
from .survival import WorkingRuns
from .windows import window_span

__all__ = ["Paced", "Pacer"]

_EARLY_EVENTS = 4096
"""Ids of events that came before their run was waiting (create still in flight), kept so
the run's first reschedule polls at once; bounded because most unknown ids are not ours."""
_SAFETY_JITTER = 0.2
_SAFETY_WINDOW_JITTER = 0.1
"""A run in a discounted window waits minutes to hours and the API targets its end within the
window: its safety-net poll comes at the window's end (plus up to this share, never before), so
its event, not a poll, tells it ended. At half the window, as before, the ``overnight`` queues
left 0.12 safety polls per response; at the window, none. The price is paid only for an event
that never arrives, and OpenAI retries a delivery for about three days: such a run is seen at
most a window late, which a user who chose the window has already accepted."""


class Paced(Protocol):
    """What pacing needs of a tracked run (the engine's record has it all)."""

    key: int
    deadline: float | None
    learn_key: tuple[str, ...]
    phase_start: float
    attempt: int
    polls_in_phase: int
    first_poll_at: float
    planned: bool
    seen_working: float
    busy: bool
    scout: bool | None

    @property
    def run_id(self) -> str:
        """The id a webhook event names when this run ends."""
        ...

    @property
    def pushable(self) -> bool:
        """Whether the platform sends an event when this run ends."""
        ...

    @property
    def followup(self) -> bool:
        """Whether the current phase continues after tool outputs."""
        ...


R = TypeVar("R", bound=Paced)


class Pacer(Generic[R]):
    """Place each run's next poll in the heap, and learn from each run seen done.

    Args:
        runs: the engine's tracked runs by key, read to skip runs that ended meanwhile.
        times: what is learned of run times per key.
        rng: the source of jitter.
        safety_poll: seconds between safety-net polls of runs covered by webhooks; ``None``
            without webhooks.
        signal: wakes the poll loop when the heap's head moves earlier.
    """

    def __init__(
        self,
        *,
        runs: Mapping[int, R],
        times: RunTimes[tuple[str, ...]],
        rng: random.Random,
        safety_poll: float | None,
        signal: Callable[[], None],
    ) -> None:
        self.schedule: PollSchedule[int] = PollSchedule()
        self.scouting: Scouting[tuple[str, ...], R] = Scouting()
        self.working: WorkingRuns[R] = WorkingRuns()  # polled and found working, by key
        self.times = times
        self.safety_poll = safety_poll
        self.by_response: dict[str, R] = {}  # waiting Responses runs, for notified()
        self.on_waiting: Callable[[str, bool], None] | None = None  # told as by_response changes
        self._runs = runs
        self._rng = rng
        self._signal = signal
        self._early: OrderedDict[str, None] = OrderedDict()

    def poll_at(self, run: R, due: float) -> None:
        """Poll ``run`` at ``due`` (at its deadline if that is sooner)."""
        if run.deadline is not None:
            due = min(due, run.deadline)
        nxt = self.schedule.next_due()
        self.schedule.schedule(run.key, due)
        if nxt is None or due < nxt:
            self._signal()

    def pushed(self, run: R) -> bool:
        """Whether webhooks cover this run (only kinds whose platform sends events)."""
        return self.safety_poll is not None and run.pushable

    def reschedule(self, run: R, now: float, poll_after: float | None) -> None:
        """Place the next poll of a run a poll found still working."""
        safety = self.safety_poll
        if safety is not None and run.pushable:
            if run.run_id not in self.by_response and self.on_waiting is not None:
                self.on_waiting(run.run_id, True)
            self.by_response[run.run_id] = run
            if run.run_id in self._early:  # its event came before it waited: look now
                del self._early[run.run_id]
                self.poll_at(run, now)
                return
            span = window_span(self.times.policy, run.learn_key)
            if span is not None and span > safety:
                safety = span * (1 + self._rng.uniform(0, _SAFETY_WINDOW_JITTER))
            else:
                safety = jittered(safety, _SAFETY_JITTER, self._rng)
            delay = max(safety, poll_after or 0.0)
            self.poll_at(run, now + delay)
            return
        key = _learn_key(run)
        self.working.add(key, run)
        self.scouting.polled(run, key)
        times, rng = self.times, self._rng
        if run.polls_in_phase == 0:
            run.planned = times.is_learned(key)
        age = now - run.phase_start
        delay = times.next_delay(key, age, run.attempt, rng, poll_after=poll_after)
        run.attempt += 1
        # A window key's unlearned polls are minutes apart already: holding them back for
        # scouts would add the scouts' wait (hours) to the latency of the runs held.
        if not times.is_learned(key) and window_span(times.policy, key) is None:

            def step(at: float, attempt: int) -> float:
                return times.next_delay(key, at, attempt, rng, poll_after=poll_after)

            delay = self.scouting.delay(run, key, age, delay, step, times.earliest_done(key))
        self.poll_at(run, now + delay)

    def seen_done(self, run: R, now: float) -> None:
        """Learn from a run a poll found done (or needing its tools), and release held runs."""
        # A poll a webhook prompted says nothing about where the model's first goes.
        pushed = self.pushed(run)
        key = _learn_key(run)
        self.working.remove(run)

        def working() -> tuple[list[float], float]:
            runs, weight = self.working.sample(key, self._rng)
            return [r.seen_working - r.phase_start for r in runs], weight

        self.times.observe_done(
            key,
            now - run.phase_start,
            first_poll=run.polls_in_phase == 1 and not pushed,
            previous=None if pushed else run.seen_working - run.phase_start,
            # No poll of this phase (done as created or as answered): nothing to check.
            first_at=None if pushed or run.polls_in_phase == 0 else run.first_poll_at,
            working=working,
            planned=run.planned,
        )
        scout = bool(run.scout)
        self.scouting.ended(run, key)
        earliest = self.times.earliest_done(key)
        if earliest is None:
            return
        classic = self.times.policy_for(key).backoff

        def polls_before(age: float) -> int:
            return classic.polls_for(age) - 1  # the last one is at or after ``age``

        def gap(age: float) -> float:
            return min(classic.gap_at(age), classic.cap)

        released = self.scouting.release(
            key, earliest, now, polls_before, gap, self._rng, scout=scout
        )
        for held, due in released:
            if held.key in self._runs and not held.busy:
                current = self.schedule.due_of(held.key)
                if current is None or due < current:
                    self.poll_at(held, due)

    def restarted(self, run: R) -> None:
        """Forget a run's place among the scouts: it was recreated and starts over."""
        self.scouting.ended(run, _learn_key(run))
        self.working.remove(run)
        self.moved_on(run.run_id)

    def moved_on(self, response_id: str) -> None:
        """No run waits on ``response_id`` any more (answered, recreated or ended)."""
        if self.by_response.pop(response_id, None) is not None and self.on_waiting is not None:
            self.on_waiting(response_id, False)

    def forget(self, run: R) -> None:
        """Drop an ended run from the heap, the scouts and the webhook index."""
        self.schedule.cancel(run.key)
        self.restarted(run)

    def notified(self, response_id: str) -> R | None:
        """An event came for ``response_id``: return the run waiting on it, or remember the id
        a while, in case its run is still being created and waits on it next."""
        run = self.by_response.get(response_id)
        if run is not None and run.key in self._runs and run.run_id == response_id:
            return run
        if self.safety_poll is not None:
            self._early[response_id] = None
            if len(self._early) > _EARLY_EVENTS:
                self._early.popitem(last=False)
        return None


def _learn_key(run: R) -> tuple[str, ...]:
    """Tool rounds' follow-ups are learned apart: they take other times than first runs."""
    return (*run.learn_key, "followup") if run.followup else run.learn_key
