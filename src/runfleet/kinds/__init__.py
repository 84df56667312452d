"""One adapter per kind of asynchronous run; the fleet knows them only through ``Kind``."""

from __future__ import annotations

from .assistants import AssistantsKind as AssistantsKind
from .base import Kind as Kind
from .base import Observation as Observation
from .base import RunRef as RunRef
from .base import RunState as RunState
from .responses import ResponsesKind as ResponsesKind

__all__ = ["AssistantsKind", "Kind", "Observation", "ResponsesKind", "RunRef", "RunState"]
