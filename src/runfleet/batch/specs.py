"""What an input line starts: the spec of its run, marked so its copies can be found.

The item's id rides in the create's metadata (beside each try's nonce), so copies of one item
can be told apart and counted on the server; the journal keeps the continuation id, so a
resumed chain's tool rounds keep the priority of their window.
"""

from __future__ import annotations

from typing import Any

from ..kinds.assistants import AssistantRunSpec
from ..kinds.base import ITEM_KEY, marked
from ..kinds.responses import ResponseSpec
from .config import BatchConfig
from .journal import Journal
from .records import BatchItem

__all__ = ["item_spec", "item_window"]


def item_spec(
    item: BatchItem,
    cfg: BatchConfig,
    journal: Journal,
    assistant_tools: tuple[dict[str, Any], ...],
) -> ResponseSpec | AssistantRunSpec:
    """Return the spec that starts ``item``'s run."""
    metadata = marked(item.metadata, **{ITEM_KEY: item.id})
    if cfg.assistant:
        return AssistantRunSpec(
            cfg.assistant,
            item.prompt,
            instructions=item.instructions,
            model=item.model,
            metadata=metadata,
            tools=assistant_tools,
        )
    model = item.model or cfg.model
    assert model is not None
    window = item_window(item, cfg)
    continuation = journal.continuation_id(item.id) if window else None
    return ResponseSpec(
        model, item.prompt, item.instructions, metadata, completion_window=window,
        continuation_id=continuation,
    )  # fmt: skip


def item_window(item: BatchItem, cfg: BatchConfig) -> str | None:
    """The item's completion window: its line's, else ``--completion-window``'s."""
    return None if cfg.assistant else item.completion_window or cfg.completion_window
