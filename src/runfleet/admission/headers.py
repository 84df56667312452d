"""Read what the server says about its limits: ``x-ratelimit-*``, ``retry-after``, 429 bodies.

The configured rpm is the user's guess; these headers are the account's real limit, so the quota
learns from every response. Headers come from any OpenAI-compatible server, so a value this
module cannot read is ignored (logged at debug) and never fails the request that carried it.
Parsing lives apart from the quota so it is tested with literal strings, no loop and no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from ..logs import get_logger

__all__ = [
    "LIMIT_REQUESTS",
    "LIMIT_TOKENS",
    "REMAINING_REQUESTS",
    "RESET_REQUESTS",
    "RETRY_AFTER",
    "RETRY_AFTER_MS",
    "LimitHit",
    "RateLimitHeaders",
    "limit_hit",
    "parse_go_duration",
    "parse_rate_limit_headers",
    "retry_after_seconds",
]

log = get_logger(__name__)

_T = TypeVar("_T")

LIMIT_REQUESTS = "x-ratelimit-limit-requests"
REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
RESET_REQUESTS = "x-ratelimit-reset-requests"
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
RETRY_AFTER_MS = "retry-after-ms"
RETRY_AFTER = "retry-after"

# Go's time.ParseDuration units. Both micro signs are accepted, as Go does; they are escaped
# because they look like a Latin "u" in source.
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# Longer units first so that "ms" is not read as "m" followed by a stray "s".
_UNIT = "|".join(sorted(map(re.escape, _UNIT_SECONDS), key=len, reverse=True))
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:{_UNIT}))+")
_BARE_NUMBER = re.compile(_NUMBER)


def parse_go_duration(text: str) -> float:
    """Return the seconds in a Go-style duration such as ``120ms``, ``6m0s`` or ``1m30.5s``.

    A bare non-negative number is read as seconds, for compatible servers that send ``1.5``.
    Negative durations are refused: a reset in the past carries no information.

    Raises:
        ValueError: the text is not a non-negative duration.
    """
    stripped = text.strip()
    if _DURATION.fullmatch(stripped):
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(stripped)
        )
    elif _BARE_NUMBER.fullmatch(stripped):
        seconds = float(stripped)
    else:
        raise ValueError(f"not a Go duration: {text!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"duration out of range: {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """The request-limit facts of one response; ``None`` where a header was absent or unreadable."""

    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None


def parse_rate_limit_headers(
    headers: Mapping[str, str], resource: Literal["requests", "tokens"] = "requests"
) -> RateLimitHeaders:
    """Read the ``x-ratelimit-*-requests`` (or ``-tokens``) headers; each unreadable one is
    skipped on its own, so a server that sends only some of them still teaches what it sends."""
    lowered = _lowercase(headers)
    limit_name = f"x-ratelimit-limit-{resource}"
    limit = _read(lowered, limit_name, _parse_count)
    if limit is not None and limit <= 0:
        # A zero limit would stop the fleet for good; no real account has one, so it is noise.
        log.debug("rate_limit_header_ignored", header=limit_name, value=lowered[limit_name])
        limit = None
    return RateLimitHeaders(
        limit=limit,
        remaining=_read(lowered, f"x-ratelimit-remaining-{resource}", _parse_count),
        reset=_read(lowered, f"x-ratelimit-reset-{resource}", parse_go_duration),
    )


LimitHit = Literal["requests", "tokens", "too_large"]
"""Which limit a 429 was about: each asks for a different answer (see :func:`limit_hit`)."""


def limit_hit(error_type: object, message: object) -> LimitHit:
    """Return which limit a 429 hit, from its body's ``type`` or, failing that, its message.

    The answers differ: a requests 429 pauses everything, a tokens 429 only what costs tokens
    (polls cost none), and "Request too large" is a request no wait will ever admit. The body's
    ``type`` says requests or tokens on OpenAI; compatible servers may send only the message
    ("... on tokens per min (TPM) ..."), so that is read too. Anything else counts as requests,
    the answer that can never overspend.
    """
    text = message if isinstance(message, str) else ""
    if "request too large" in text.lower():
        return "too_large"
    if error_type == "tokens" or (error_type != "requests" and _TOKENS_MESSAGE.search(text)):
        return "tokens"
    return "requests"


_TOKENS_MESSAGE = re.compile(r"tokens per min|\bTPM\b", re.IGNORECASE)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return how long a 429 asks the client to wait, or ``None`` if it does not say.

    ``retry-after-ms`` is preferred because it is finer; ``retry-after`` is read as seconds. The
    HTTP-date form of ``retry-after`` is ignored: turning it into a delay needs the wall clock,
    which nothing in runfleet's scheduling reads, and OpenAI sends seconds.
    """
    lowered = _lowercase(headers)
    millis = _read(lowered, RETRY_AFTER_MS, _parse_seconds)
    if millis is not None:
        return millis / 1000.0
    return _read(lowered, RETRY_AFTER, _parse_seconds)


def _lowercase(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Index headers by lower-case name: plain dicts are not case-insensitive like httpx's.

    The SDK's headers (httpx2 ``Headers``, aiohttp's multidict) already look names up
    case-insensitively, and this runs on every response: only a plain dict is copied.
    """
    if isinstance(headers, dict):
        return {name.lower(): value for name, value in headers.items()}
    return headers


def _read(headers: Mapping[str, str], name: str, parse: Callable[[str], _T]) -> _T | None:
    """Parse one header if present; log and drop it if it does not parse."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError:
        log.debug("rate_limit_header_ignored", header=name, value=value)
        return None


def _parse_count(text: str) -> float:
    """Read a non-negative request count (a limit or what remains of it)."""
    stripped = text.strip()
    if not _BARE_NUMBER.fullmatch(stripped):
        raise ValueError(f"not a count: {text!r}")
    return float(stripped)


def _parse_seconds(text: str) -> float:
    """Read a non-negative, finite number (``retry-after`` in seconds or milliseconds)."""
    stripped = text.strip()
    if not _BARE_NUMBER.fullmatch(stripped):
        raise ValueError(f"not a number of seconds: {text!r}")
    value = float(stripped)
    if not math.isfinite(value):
        raise ValueError(f"out of range: {text!r}")
    return value
