"""OpenAI's list pages: ``limit``, ``order`` and ``after``/``before`` cursors, one envelope."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .world import SimError

__all__ = ["listing", "paged"]

T = TypeVar("T")


def paged(
    items: Sequence[T], query: Mapping[str, str], id_of: Callable[[T], str]
) -> tuple[list[T], bool]:
    """Return one page of ``items`` (oldest first) as ``query`` asks, and whether more follow.

    Raises:
        SimError: a bad ``limit``, ``order`` or cursor, worded as OpenAI words it.
    """
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise SimError(
            400, "Invalid value for 'limit': expected an integer.", param="limit"
        ) from None
    if not 1 <= limit <= 100:
        raise SimError(400, "Invalid value for 'limit': must be between 1 and 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise SimError(400, "Invalid value for 'order': expected 'asc' or 'desc'.", param="order")
    ordered = list(items) if order == "asc" else list(items)[::-1]
    for cursor, keep_after in (("after", True), ("before", False)):
        if ident := query.get(cursor):
            idx = next((i for i, x in enumerate(ordered) if id_of(x) == ident), None)
            if idx is None:
                raise SimError(400, f"Invalid '{cursor}': no object {ident}.", param=cursor)
            ordered = ordered[idx + 1 :] if keep_after else ordered[:idx]
    return ordered[:limit], len(ordered) > limit


def listing(bodies: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """Return a list page's envelope around its objects' bodies."""
    return {
        "object": "list",
        "data": bodies,
        "first_id": bodies[0]["id"] if bodies else None,
        "last_id": bodies[-1]["id"] if bodies else None,
        "has_more": more,
    }
