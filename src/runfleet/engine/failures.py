"""What a failed request means for its run: try again, end the run, or end every run.

One policy for the whole engine. A 429, a 5xx, a dropped connection or a 2xx body that cannot
be read is transient: the same request goes again, each time through the one door, after a
jittered backoff (a poll's retries are bounded by the router; a run ends only when the server
says so). A refused key
ends every run at once (no request of this fleet can succeed). A 404 ends the run as not
found; another 4xx ends it as failed, or, for a create, as rejected. Anything else is a bug of
ours and ends only that run.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import openai

from ..errors import (
    AuthError,
    RunError,
    RunFailed,
    RunfleetError,
    RunNotFound,
    RunRejected,
    UnreadableBody,
)
from ..logs import get_logger
from ..polling.schedule import Backoff

__all__ = ["Retrier", "auth_error", "poll_error", "refusal", "transient"]

log = get_logger(__name__)
T = TypeVar("T")

_TRANSIENT = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,
    openai.APITimeoutError,
    UnreadableBody,
)


def transient(exc: BaseException) -> bool:
    """Whether the same request may succeed if sent again (429, 5xx, network, a bad body)."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def auth_error(exc: BaseException, key_hint: str) -> AuthError | None:
    """Return the fleet-wide error of a refused key (401/403), or None for any other error."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return AuthError(exc.status_code, key_hint, exc.message)
    return None


def refusal(exc: Exception) -> RunfleetError:
    """Return what the submitter of a create that failed for good sees."""
    if isinstance(exc, RunfleetError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        refused = RunRejected(exc.status_code, exc.message)
    else:
        refused = RunRejected(0, f"{type(exc).__name__}: {exc}")
    refused.__cause__ = exc
    return refused


def poll_error(run_id: str, exc: Exception) -> RunfleetError | None:
    """Return how a failed poll, answer or fetch ends its run; None when it is worth a retry."""
    if isinstance(exc, openai.NotFoundError):
        return RunNotFound(run_id)
    if transient(exc):  # an unreadable poll too: only the server says a run is over
        return None
    if isinstance(exc, RunfleetError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return RunFailed(run_id, str(exc.code or exc.status_code), exc.message)
    log.error("run_internal_error", run_id=run_id, exc_info=exc)
    return RunError(run_id, f"failed inside runfleet: {exc!r}")


class Retrier:
    """Send a request again on transient errors, with a jittered exponential backoff.

    Args:
        max_retries: tries after the first before the error is the run's.
        rng: the source of jitter.
    """

    def __init__(self, max_retries: int, rng: random.Random) -> None:
        self.max_retries = max_retries
        self.backoff = Backoff(initial=0.5, factor=2.0, cap=10.0)
        self._rng = rng

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive transient failures (1 or more)."""
        return self.backoff.next_delay(failures - 1, self._rng)

    async def call(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        run_id: Callable[[], str],
        on_try: Callable[[], None] | None = None,
        on_error: Callable[[Exception, bool], None] | None = None,
    ) -> T:
        """Return ``call()``, tried again on transient errors; ``on_try`` counts each try.

        ``on_error(exc, last)`` sees each failure first (``last``: no try follows) and may
        raise instead, e.g. to stop on a failure that sending again could make worse.
        """
        for attempt in itertools.count():
            if on_try is not None:
                on_try()
            try:
                return await call()
            except Exception as exc:
                last = not transient(exc) or attempt >= self.max_retries
                if on_error is not None:
                    on_error(exc, last)
                if last:
                    raise
                log.info("request_retried", run_id=run_id(), attempt=attempt + 1, error=str(exc))
                await anyio.sleep(self.delay(attempt + 1))
        raise AssertionError("unreachable")
