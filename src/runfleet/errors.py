"""The exceptions runfleet raises, one tree so callers can catch as broadly as they need.

::

    RunfleetError
    ├── RunError                  a run ended without a result (carries run_id)
    │   ├── RunFailed             the server reported failure (code, message)
    │   ├── RunExpired            a tool round outlived ``expires_at``
    │   ├── RunCancelled          cancelled by the user, a policy or shutdown
    │   │   └── RunDetached       handed back at shutdown, left alive on the server
    │   ├── RunTimeout            the fleet's deadline passed (also a TimeoutError)
    │   ├── RunIncomplete         ended ``incomplete`` (reason)
    │   ├── RunNotFound           the server does not know the id (404)
    │   ├── RunRejected           the server refused to start it (4xx on create)
    │   │   └── RequestTooLarge   its tokens exceed the whole token limit: no wait cures it
    │   ├── AmbiguousCreate       its create may or may not have been applied
    │   └── ToolError             a tool call failed and policy fails the run
    ├── UnreadableBody            a 2xx answer that cannot be read (retried like a 5xx)
    ├── QuotaError                the request quota cannot be spent
    │   └── QuotaExhausted        429s persisted past the fleet's patience
    │       └── RedisUnavailable  the shared limits' Redis is gone past the fail_closed wait
    ├── AuthError                 401/403: the key is missing or refused
    └── FleetClosed               submit() on a fleet that is shutting down

Each class names its ``outcome``: the one word results, logs, stats, batch lines and bench rows
use for a run that ended with it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AmbiguousCreate",
    "AuthError",
    "FleetClosed",
    "QuotaError",
    "QuotaExhausted",
    "RedisUnavailable",
    "RequestTooLarge",
    "RunCancelled",
    "RunDetached",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunIncomplete",
    "RunNotFound",
    "RunRejected",
    "RunTimeout",
    "RunfleetError",
    "ToolError",
    "UnreadableBody",
    "key_hint",
]


def key_hint(api_key: object) -> str:
    """Return the last four characters of an API key: enough to tell keys apart, never more."""
    return str(api_key or "")[-4:]


class RunfleetError(Exception):
    """Raised for every failure runfleet itself reports."""

    outcome = "error"


class RunError(RunfleetError):
    """Raised when a run ends without a result.

    ``figures`` holds what the run cost (a ``RunFigures``) when the fleet tracked it.
    """

    figures: Any = None

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(f"{run_id}: {message}")


class RunFailed(RunError):
    """Raised when the server reports a run as failed."""

    outcome = "failed"

    def __init__(self, run_id: str, code: str | None, message: str | None) -> None:
        self.code = code
        self.detail = message
        super().__init__(run_id, f"failed ({code or 'no code'}): {message or 'no message'}")


class RunExpired(RunError):
    """Raised when a run expired, usually because a tool round outlived ``expires_at``."""

    outcome = "expired"

    def __init__(
        self, run_id: str, message: str = "expired before its tool outputs arrived"
    ) -> None:
        super().__init__(run_id, message)


class RunCancelled(RunError):
    """Raised when a run was cancelled by the caller, a policy or shutdown."""

    outcome = "cancelled"

    def __init__(self, run_id: str, reason: str = "cancelled") -> None:
        self.reason = reason
        super().__init__(run_id, reason)


class RunDetached(RunCancelled):
    """Raised when the fleet closed with ``on_exit="detach"``: the run may still be alive on the
    server, and its ids can be watched again by another fleet."""

    outcome = "detached"


class RunTimeout(RunError, TimeoutError):
    """Raised when a run outlived the fleet's deadline and was cancelled server-side."""

    outcome = "timed_out"

    def __init__(self, run_id: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(run_id, f"no result within {timeout:g} s; cancelled on the server")


class RunIncomplete(RunError):
    """Raised when a run ended ``incomplete`` (token limits, content filter)."""

    outcome = "incomplete"

    def __init__(self, run_id: str, reason: str | None) -> None:
        self.reason = reason
        super().__init__(run_id, f"incomplete ({reason or 'no reason given'})")


class RunNotFound(RunError):
    """Raised when the server does not know the run (404), e.g. a stored response aged out."""

    outcome = "not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id, "not found on the server")


class RunRejected(RunError):
    """Raised when the server refused to start a run (a 4xx answer to the create request)."""

    outcome = "rejected"

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__("-", f"refused to start (HTTP {status}): {message}")


class RequestTooLarge(RunRejected):
    """Raised when one request needs more tokens than the whole token limit allows.

    Nothing else waits on it: the fleet refuses it before it queues when it knows the limit,
    and the server's "Request too large" 429 ends it without a retry.
    """

    outcome = "too_large"

    def __init__(self, tokens: float | None, limit: float | None, message: str = "") -> None:
        self.tokens = tokens
        self.limit = limit
        if not message:
            message = (
                f"needs an estimated {tokens:,.0f} tokens, more than the whole limit of "
                f"{limit:,.0f} tokens per minute; shorten its input or lower max_output_tokens"
            )
        super().__init__(429, message)


class AmbiguousCreate(RunError):
    """Raised when a create may have been applied though no readable answer came back (the
    connection dropped after sending, or the body was unreadable), and policy does not send it
    again: a run may exist on the server, paid for, that no one polls."""

    outcome = "ambiguous"

    def __init__(self, run_id: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            run_id, f"the create may have been applied ({reason}); it was not sent again"
        )


class UnreadableBody(RunfleetError):
    """Raised when a 2xx answer's body cannot be read, or lacks what its state needs: the
    request was likely applied, so a poll is tried again and a create is ambiguous."""

    outcome = "unreadable"

    def __init__(self, request: str, detail: str) -> None:
        self.request = request
        self.detail = detail
        super().__init__(f"unreadable answer to a {request} request: {detail}")


class ToolError(RunError):
    """Raised when a tool call failed and the fleet's policy fails the run instead of replying."""

    outcome = "tool_error"

    def __init__(self, run_id: str, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(run_id, f"tool {tool!r} failed: {message}")


class QuotaError(RunfleetError):
    """Raised when the request quota cannot be spent."""


class QuotaExhausted(QuotaError):
    """Raised when rate-limit errors persist past the fleet's patience."""

    outcome = "quota_exhausted"


class RedisUnavailable(QuotaExhausted):
    """Raised when the Redis that shares an account's limits cannot be reached in time.

    A subclass of :class:`QuotaExhausted` because it ends admissions the same way: nothing may
    be sent without knowing what the other processes spent.
    """

    outcome = "redis_unavailable"

    def __init__(self, where: str, account: str, why: str) -> None:
        self.where = where
        self.account = account
        super().__init__(f"cannot reach Redis at {where} (account {account!r}): {why}")


class AuthError(RunfleetError):
    """Raised when the server refuses the API key (401/403); every waiter fails fast."""

    outcome = "auth"

    def __init__(self, status: int, key_hint: str, message: str) -> None:
        self.status = status
        self.key_hint = key_hint
        super().__init__(
            f"HTTP {status} with API key ...{key_hint}: {message} "
            "(the key is read when the client is created)"
        )


class FleetClosed(RunfleetError):
    """Raised when work is submitted to a fleet that is closing or closed."""

    outcome = "closed"
