"""How a fleet gets its quota: its own, one passed in, or one whose limits Redis shares.

Kept out of :mod:`runfleet.fleet` so the public face only names the options; the choice of
store lives with the door it feeds.
"""

from __future__ import annotations

import hashlib

from .quota import RequestQuota
from .shared import RedisLimits

__all__ = ["RedisLimits", "account_of", "build_quota"]


def account_of(api_key: str | None) -> str:
    """Name an account by a hash of its API key: processes with one key share, none leaks it."""
    return "key-" + hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


def build_quota(
    quota: RequestQuota | None,
    rpm: float,
    burst: float | None,
    tpm: float | None,
    redis: str | RedisLimits | None,
    account: str | None,
    api_key: str | None,
    per_second: float | None = None,
    /,
) -> RequestQuota:
    """Return ``quota``, or a new one of ``rpm``/``tpm``, shared through ``redis`` if given.

    ``redis`` is a URL (then the store fails closed; pass a :class:`RedisLimits` to choose the
    policy) and ``account`` names what is shared (default: a hash of the API key, so processes
    with one key share one account without the key reaching Redis).

    Raises:
        ValueError: both ``quota`` and ``redis`` given, an ``account`` without ``redis``, or a
            bad URL.
    """
    if quota is not None:
        if redis is not None:
            raise ValueError("redis cannot be set beside a shared quota: set it on the quota")
        return quota
    if redis is None:
        if account is not None:
            raise ValueError("account names what Redis shares: pass redis= too")
        return RequestQuota(rpm, burst=burst, tpm=tpm, per_second=per_second)
    if isinstance(redis, str):
        redis = RedisLimits(redis, account=account or account_of(api_key))
    elif account is not None and account != redis.account:
        raise ValueError(f"account {account!r} differs from the store's {redis.account!r}")
    return RequestQuota(rpm, burst=burst, tpm=tpm, shared=redis, per_second=per_second)
