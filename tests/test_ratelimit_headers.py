"""Reading x-ratelimit-* and retry-after headers: OpenAI's formats, and noise ignored quietly."""

from __future__ import annotations

import httpx2
import pytest
from structlog.testing import capture_logs

from runfleet.admission.headers import (
    RateLimitHeaders,
    limit_hit,
    parse_go_duration,
    parse_rate_limit_headers,
    retry_after_seconds,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("120ms", 0.12),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1m30.5s", 90.5),
        ("2h0m0s", 7200.0),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("250us", 250e-6),
        ("250\u00b5s", 250e-6),
        ("250\u03bcs", 250e-6),
        ("1500ns", 1.5e-6),
        ("0s", 0.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 20ms ", 0.02),
    ],
)
def test_go_durations_are_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "1x", "-1s", "1s2", "1 s", "nan", "inf", "1e3s", "s1"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_go_duration(text)


def test_openai_headers_are_read() -> None:
    headers = {
        "x-ratelimit-limit-requests": "3000",
        "x-ratelimit-remaining-requests": "2999",
        "x-ratelimit-reset-requests": "20ms",
        "x-ratelimit-limit-tokens": "250000",
    }
    assert parse_rate_limit_headers(headers) == RateLimitHeaders(3000.0, 2999.0, 0.02)


def test_header_names_are_case_insensitive_even_in_a_plain_dict() -> None:
    headers = {"X-RateLimit-Limit-Requests": "60", "X-Ratelimit-Reset-Requests": "1s"}
    assert parse_rate_limit_headers(headers) == RateLimitHeaders(limit=60.0, reset=1.0)


def test_absent_headers_are_none() -> None:
    assert parse_rate_limit_headers({"content-type": "application/json"}) == RateLimitHeaders()


def test_each_malformed_header_is_dropped_alone_and_logged_at_debug() -> None:
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "soon",
    }
    with capture_logs() as logs:
        parsed = parse_rate_limit_headers(headers)
    assert parsed == RateLimitHeaders(remaining=12.0)
    assert logs == [
        {
            "event": "rate_limit_header_ignored",
            "log_level": "debug",
            "header": "x-ratelimit-limit-requests",
            "value": "lots",
        },
        {
            "event": "rate_limit_header_ignored",
            "log_level": "debug",
            "header": "x-ratelimit-reset-requests",
            "value": "soon",
        },
    ]


@pytest.mark.parametrize("value", ["0", "-5", "1e9", ""])
def test_a_limit_that_is_zero_or_unreadable_is_ignored(value: str) -> None:
    assert parse_rate_limit_headers({"x-ratelimit-limit-requests": value}).limit is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-1"}, None),
        ({}, None),
    ],
)
def test_retry_after_prefers_milliseconds_then_seconds(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


def test_httpx_headers_are_read_case_insensitively_without_a_copy() -> None:
    """The SDK's own header objects are looked up as they are, in any case."""
    headers = httpx2.Headers(
        {"X-RateLimit-Limit-Requests": "600", "X-RateLimit-Reset-Requests": "120ms"}
    )
    parsed = parse_rate_limit_headers(headers)
    assert parsed.limit == 600
    assert parsed.reset == pytest.approx(0.12)
    assert retry_after_seconds(httpx2.Headers({"Retry-After-Ms": "250"})) == pytest.approx(0.25)


def test_token_headers_are_read_like_the_request_ones() -> None:
    headers = {
        "x-ratelimit-limit-tokens": "40000",
        "x-ratelimit-remaining-tokens": "38800",
        "x-ratelimit-reset-tokens": "1.8s",
        "x-ratelimit-limit-requests": "3000",
    }
    assert parse_rate_limit_headers(headers, "tokens") == RateLimitHeaders(40_000, 38_800, 1.8)


@pytest.mark.parametrize(
    ("error_type", "message", "hit"),
    [
        ("tokens", "Rate limit reached for m on tokens per min (TPM): Limit 1", "tokens"),
        ("requests", "Rate limit reached for m on requests per min (RPM): Limit 1", "requests"),
        (None, "Rate limit reached for m in org-x on tokens per min (TPM): Limit 9", "tokens"),
        ("tokens", "Request too large for m on tokens per min (TPM): Limit 10", "too_large"),
        (None, "Too many requests", "requests"),
        (None, None, "requests"),
    ],
)  # fmt: skip
def test_a_429_says_which_limit_it_hit_by_type_or_message(
    error_type: str | None, message: str | None, hit: str
) -> None:
    assert limit_hit(error_type, message) == hit
