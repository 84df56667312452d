"""The account's two limits as a client meets them: admission, ``x-ratelimit-*`` headers, 429s.

The buckets (``ratelimit.py``) count in scenario time; what a client reads is converted here to
its real time, because it sleeps on it: limits per real minute, resets and ``retry-after`` in
real seconds. Token *amounts* are not scaled: speeding time up does not shrink a prompt, so a
request too large for the scenario's ``tpm`` stays too large at any ``time_scale``.
"""

from __future__ import annotations

import math

from .lifecycle import Segment
from .ratelimit import Admission, TokenBucket, TokenWindow, go_duration
from .scenario import Scenario
from .world import SimError

__all__ = ["ORGANIZATION", "AccountLimits", "QuotaError"]

ORGANIZATION = "org-sim"

# What the simulator sent before it had a token limit, kept for scenarios without one.
_UNLIMITED_TOKENS = {
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-tokens": "29999000",
    "x-ratelimit-reset-tokens": "2ms",
}


class QuotaError(SimError):
    """Raised for a 429 from the quota; ``kind`` names the limit that refused the request."""

    def __init__(self, kind: str, message: str, headers: dict[str, str]) -> None:
        limit = "requests" if kind in ("requests", "storm") else "tokens"
        super().__init__(429, message, type=limit, code="rate_limit_exceeded", headers=headers)
        self.kind = kind  # requests, tokens, too_large or storm


class AccountLimits:
    """Admit requests against the requests and tokens buckets, and describe both in headers."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.requests = TokenBucket(scenario.quota, scenario.faults.storms)
        self.tokens = TokenWindow(scenario.quota)

    def _per_real_minute(self, per_minute: float) -> int:
        return max(1, round(per_minute / self.scenario.time_scale))

    def headers(self, now: float) -> dict[str, str]:
        """Return the ``x-ratelimit-*`` headers as they stand at ``now``."""
        scale = self.scenario.time_scale
        limit = self._per_real_minute(self.scenario.quota.rpm)
        out = {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(
                math.floor(limit * self.requests.remaining_fraction(now))
            ),
            "x-ratelimit-reset-requests": go_duration(self.requests.until_full(now) * scale),
        }
        tpm = self.scenario.quota.tpm
        if not self.scenario.quota.token_headers:
            return out
        if tpm is None:
            return out | _UNLIMITED_TOKENS
        tokens = self._per_real_minute(tpm)
        return out | {
            "x-ratelimit-limit-tokens": str(tokens),
            "x-ratelimit-remaining-tokens": str(
                math.floor(tokens * self.tokens.remaining_fraction(now))
            ),
            "x-ratelimit-reset-tokens": go_duration(self.tokens.until_full(now) * scale),
        }

    def admit_request(self, now: float, model: str) -> None:
        """Take one request from the requests bucket.

        Raises:
            QuotaError: the bucket is empty, or a storm is on (kind ``storm``).
        """
        adm = self.requests.admit(now)
        if adm.admitted:
            return
        limit = self._per_real_minute(self.scenario.quota.rpm)
        used = limit - math.floor(limit * self.requests.remaining_fraction(now))
        raise QuotaError(
            "storm" if adm.storm else "requests",
            f"Rate limit reached for {model} in organization {ORGANIZATION} on requests per min "
            f"(RPM): Limit {limit}, Used {limit if adm.storm else used}, Requested 1. "
            f"Please try again in {go_duration(adm.retry_after * self.scenario.time_scale)}.",
            self._retry_after(adm),
        )

    def admit_tokens(self, now: float, segment: Segment, model: str) -> None:
        """Charge a pass's tokens (input estimate plus output reservation).

        Raises:
            QuotaError: not enough tokens in the window (kind ``tokens``), or more than the
                whole limit (kind ``too_large``: no ``retry-after``, since no wait helps).
        """
        adm = self.tokens.admit(now, segment)
        if adm.admitted:
            return
        tpm = self.scenario.quota.tpm
        assert tpm is not None  # without a limit every pass is admitted
        requested = segment.charged
        where = f"{model} in organization {ORGANIZATION} on tokens per min (TPM)"
        if adm.too_large:
            raise QuotaError(
                "too_large",
                f"Request too large for {where}: Limit {round(tpm)}, Requested {requested}. "
                "The input or output tokens must be reduced in order to run successfully.",
                {},
            )
        limit = self._per_real_minute(tpm)
        used = limit - math.floor(limit * self.tokens.remaining_fraction(now))
        raise QuotaError(
            "tokens",
            f"Rate limit reached for {where}: Limit {limit}, Used {used}, Requested {requested}. "
            f"Please try again in {go_duration(adm.retry_after * self.scenario.time_scale)}.",
            self._retry_after(adm),
        )

    def _retry_after(self, adm: Admission) -> dict[str, str]:
        if not self.scenario.quota.retry_after:
            return {}
        real = adm.retry_after * self.scenario.time_scale
        return {"retry-after-ms": str(math.ceil(real * 1000)), "retry-after": str(math.ceil(real))}
