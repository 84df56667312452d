"""The checks on a fleet's options, kept apart so the public face stays thin.

Each check raises a one-line ``ValueError`` naming the option and the value it got, before
anything is built: a misspelt option must never leave a half-made fleet behind.
"""

from __future__ import annotations

import math
from typing import Any

from ..kinds.responses import WINDOWS


def check_fleet_options(
    *,
    client: Any,
    rpm: Any,
    tpm: Any,
    timeout: Any,
    safety_poll: Any,
    on_exit: Any,
    on_ambiguous_create: Any,
    shared_quota: bool,
    completion_window: Any = None,
    per_second: Any = None,
) -> None:
    """Raise ``ValueError`` for the first option out of range (``tpm`` is checked by the quota)."""
    if not isinstance(rpm, int | float) or not rpm > 0 or math.isinf(rpm):
        raise ValueError(f"rpm must be a positive number, got {rpm!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be positive or None, got {timeout!r}")
    if not (isinstance(safety_poll, int | float) and 0 < safety_poll < math.inf):
        raise ValueError(f"safety_poll must be a positive number, got {safety_poll!r}")
    if on_ambiguous_create not in ("retry", "fail"):
        raise ValueError(
            f"on_ambiguous_create must be 'retry' or 'fail', not {on_ambiguous_create!r}"
        )
    if on_exit not in ("wait", "cancel", "detach"):
        raise ValueError(f"on_exit must be 'wait', 'cancel' or 'detach', not {on_exit!r}")
    if not getattr(client, "api_key", None):
        raise ValueError(
            "the client has no API key: set OPENAI_API_KEY (or pass api_key=) "
            "before creating it; the key is read when the client is created"
        )
    if completion_window not in (None, *WINDOWS):
        raise ValueError(
            f"completion_window must be one of {', '.join(WINDOWS)}, not {completion_window!r}"
        )
    for name, value in (("tpm", tpm), ("per_second", per_second)):
        if shared_quota and value is not None:
            raise ValueError(f"{name} cannot be set beside a shared quota: set it on the quota")
