"""The discount of the ``2h`` and ``8h`` completion windows, as a batch summary states it.

OpenAI prices a background response that waits in the ``2h`` window 30 % below Standard
processing, and one in the ``8h`` window 40 % below, per token, input and output alike. A
batch does not know the model's price, so it states the discount in tokens: the tokens each
output line's ``usage`` reports (``total_tokens``: what the run was billed for, failed runs
included), summed per window, times the window's discount, is the number of tokens whose
Standard price was not paid. It counts the whole file, items an earlier session finished too,
since a batch that waits hours is often finished by a later session than the one that began it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .records import OutputLine

__all__ = ["DISCOUNTS", "WindowTokens", "discount_text"]

DISCOUNTS = {"2h": 0.30, "8h": 0.40}
"""The share of the Standard token price each discounted window takes off."""

HOW = (
    "usage.total_tokens of each line, summed per completion window, times the window's "
    "discount (2h: 30 %, 8h: 40 %); saved is in tokens at the Standard price"
)


@dataclass(slots=True)
class WindowTokens:
    """Tokens used by the lines of a file, per completion window (``soonest`` for the rest)."""

    by_window: Counter[str] = field(default_factory=Counter)

    def add(self, record: OutputLine) -> None:
        """Count the tokens of one output line under its window."""
        if record.usage is not None:
            self.by_window[record.completion_window or "soonest"] += record.usage.total_tokens

    def data(self) -> dict[str, Any] | None:
        """Return the discount as ``--summary-json`` writes it, or None if no line had one."""
        windows = {
            w: {"tokens": n, "off": DISCOUNTS[w], "saved": round(n * DISCOUNTS[w])}
            for w, n in sorted(self.by_window.items())
            if w in DISCOUNTS and n
        }
        if not windows:
            return None
        total = sum(self.by_window.values())
        saved = sum(w["saved"] for w in windows.values())
        return {
            "by_window": windows,
            "tokens": total,
            "saved": saved,
            "saved_share": round(saved / total, 4) if total else 0.0,
            "how": HOW,
        }


def discount_text(data: dict[str, Any]) -> str:
    """Return the summary's discount line from :meth:`WindowTokens.data`."""
    parts = [
        f"{w['tokens']} tokens in {name} at {w['off']:.0%} off"
        for name, w in data["by_window"].items()
    ]
    return (
        f"discount   {', '.join(parts)}: the Standard price of {data['saved']} tokens saved, "
        f"{data['saved_share']:.0%} of the {data['tokens']} the file used"
    )
