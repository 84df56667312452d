"""The discounted completion windows' own poll scale: an 8h response is not polled like a
``soonest`` one.

A response in the ``2h`` or ``8h`` window waits minutes to hours in the queue; the classic
loop (0.5 s x1.5, capped at 5 s) would spend thousands of polls on it. So a key learned under
such a window (the Responses adapter puts the window in it) gets a policy of its own, derived
from the fleet's: the first poll at 1/80 of the window, gaps capped at 1/32 of it (6 and 15
minutes for ``8h``, 90 s and 225 s for ``2h``), and a stall only once the run has waited past
its window and a margin, since the API promises nothing sooner. Everything is in the policy's
``time_unit``, so a fleet scaled for a time-scaled simulator scales the windows too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from .policy import PollPolicy

__all__ = ["WINDOW_DEADLINE", "WINDOW_SECONDS", "window_policy", "window_span"]

WINDOW_SECONDS = {"2h": 7200.0, "8h": 28800.0}
"""The discounted windows by name (as the API spells them), in seconds."""
WINDOW_DEADLINE = 1.25
"""A run in a discounted window with no deadline of its own is cancelled at this many times
the window (10 h for ``8h``): past the window and the stall margin, it is not coming."""
_FIRST_SHARE = 1 / 80
"""The first poll of an unlearned window key, as a share of the window: its queue is typically
a sizeable part of the window, so nothing is found done much earlier."""
_CAP_SHARE = 1 / 32
"""The longest gap between polls, as a share of the window: the detection latency stays
within about 3 % of the window."""
_STALL_MARGIN = 1.1
"""A run still queued past its window and this margin is stalled: the API targets completion
within the window, so only then is something wrong."""


def window_span(policy: PollPolicy, key: Hashable) -> float | None:
    """Return the length of the window ``key`` is learned under in the policy's seconds, or
    None for a key of no discounted window (``soonest``, Assistants)."""
    if isinstance(key, tuple):
        for part in key:
            if isinstance(part, str) and part in WINDOW_SECONDS:
                return WINDOW_SECONDS[part] * policy.time_unit
    return None


def window_policy(policy: PollPolicy, key: Hashable) -> PollPolicy:
    """Return the policy runs of ``key`` are polled by: ``policy`` itself unless ``key`` is of
    a discounted window, else one on the window's scale (shares, counts and factors kept; a
    ``latency_target`` set for ``soonest`` runs is dropped, the learned median sets the gap)."""
    span = window_span(policy, key)
    if span is None:
        return policy
    cap = span * _CAP_SHARE
    backoff = dataclasses.replace(
        policy.backoff,
        initial=span * _FIRST_SHARE,
        cap=max(cap, policy.backoff.min_interval),
    )
    return dataclasses.replace(
        policy,
        backoff=backoff,
        latency_target=None,
        stall_floor=max(policy.stall_floor, span),
        stall_unlearned=max(policy.stall_unlearned, span * _STALL_MARGIN),
    )
