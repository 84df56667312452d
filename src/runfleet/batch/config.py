"""What ``runfleet batch`` was asked to do, and the error that refuses a batch before it starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .shards import Shard

__all__ = ["BatchConfig", "BatchError"]


class BatchError(Exception):
    """Raised when a batch cannot start (bad input, no key, no server...) or the key is refused."""


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """What ``runfleet batch`` was asked to do; see ``runfleet batch --help``."""

    input: Path
    out: Path
    model: str | None = None
    assistant: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_in_flight: int = 200
    timeout: float | None = None
    tools: tuple[Any, ...] = ()
    api_key: str | None = None
    base_url: str | None = None
    journal: Path | None = None
    summary_json: Path | None = None
    strict: bool = False
    fresh: bool = False
    grace: float = 60.0
    progress: str = "auto"
    progress_every: float = 10.0
    sim: str | None = None
    sim_time_scale: float = 1.0
    shard: Shard | None = None
    metrics_port: int | None = None
    redis: str | None = None
    account: str | None = None
    on_redis_failure: str = "fail_closed"
    completion_window: str | None = None

    @property
    def journal_path(self) -> Path:
        """Where the journal lives: ``--journal``, or beside the output."""
        return self.journal or self.out.with_name(self.out.name + ".journal")

    @property
    def kind(self) -> str:
        """``responses`` (``--model``) or ``assistants`` (``--assistant``)."""
        return "assistants" if self.assistant else "responses"
