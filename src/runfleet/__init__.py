"""Keep thousands of asynchronous OpenAI runs in flight through one rate-limited poll loop.

The names below are imported on first use (PEP 562): importing the ``openai`` SDK takes over a
second, and ``runfleet sim`` or ``runfleet --help`` need none of it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .admission.quota import Priority as Priority
    from .admission.quota import RequestQuota as RequestQuota
    from .engine.feeder import Submission as Submission
    from .engine.handle import RunHandle as RunHandle
    from .errors import AuthError as AuthError
    from .errors import FleetClosed as FleetClosed
    from .errors import QuotaError as QuotaError
    from .errors import QuotaExhausted as QuotaExhausted
    from .errors import RunCancelled as RunCancelled
    from .errors import RunDetached as RunDetached
    from .errors import RunError as RunError
    from .errors import RunExpired as RunExpired
    from .errors import RunFailed as RunFailed
    from .errors import RunfleetError as RunfleetError
    from .errors import RunIncomplete as RunIncomplete
    from .errors import RunNotFound as RunNotFound
    from .errors import RunRejected as RunRejected
    from .errors import RunTimeout as RunTimeout
    from .errors import ToolError as ToolError
    from .fleet import Fleet as Fleet
    from .kinds.assistants import AssistantRunSpec as AssistantRunSpec
    from .kinds.responses import ResponseSpec as ResponseSpec
    from .polling.learning import PollPolicy as PollPolicy
    from .polling.schedule import Backoff as Backoff
    from .results import RunFigures as RunFigures
    from .results import RunResult as RunResult
    from .results import ToolRound as ToolRound
    from .stats import FleetStats as FleetStats
    from .tools import Tool as Tool
    from .tools import ToolCall as ToolCall
    from .tools import ToolOutput as ToolOutput
    from .tools import ToolRegistry as ToolRegistry
    from .tools import tool as tool
    from .webhooks import ReceiverStats as ReceiverStats
    from .webhooks import WebhookReceiver as WebhookReceiver

_HOMES: dict[str, str] = {
    "AuthError": ".errors",
    "FleetClosed": ".errors",
    "QuotaError": ".errors",
    "QuotaExhausted": ".errors",
    "RunCancelled": ".errors",
    "RunDetached": ".errors",
    "RunError": ".errors",
    "RunExpired": ".errors",
    "RunFailed": ".errors",
    "RunfleetError": ".errors",
    "RunIncomplete": ".errors",
    "RunNotFound": ".errors",
    "RunRejected": ".errors",
    "RunTimeout": ".errors",
    "ToolError": ".errors",
    "Fleet": ".fleet",
    "RunHandle": ".engine.handle",
    "Submission": ".engine.feeder",
    "AssistantRunSpec": ".kinds.assistants",
    "ResponseSpec": ".kinds.responses",
    "PollPolicy": ".polling.learning",
    "Priority": ".admission.quota",
    "RequestQuota": ".admission.quota",
    "RunFigures": ".results",
    "RunResult": ".results",
    "ToolRound": ".results",
    "Backoff": ".polling.schedule",
    "FleetStats": ".stats",
    "Tool": ".tools",
    "ToolCall": ".tools",
    "ToolOutput": ".tools",
    "ToolRegistry": ".tools",
    "tool": ".tools",
    "ReceiverStats": ".webhooks",
    "WebhookReceiver": ".webhooks",
}
"""Where each public name lives, relative to this package."""

__version__ = _version("runfleet")

__all__ = [
    "AssistantRunSpec",
    "AuthError",
    "Backoff",
    "Fleet",
    "FleetClosed",
    "FleetStats",
    "PollPolicy",
    "Priority",
    "QuotaError",
    "QuotaExhausted",
    "ReceiverStats",
    "RequestQuota",
    "ResponseSpec",
    "RunCancelled",
    "RunDetached",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunFigures",
    "RunHandle",
    "RunIncomplete",
    "RunNotFound",
    "RunRejected",
    "RunResult",
    "RunTimeout",
    "RunfleetError",
    "Submission",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolOutput",
    "ToolRegistry",
    "ToolRound",
    "WebhookReceiver",
    "__version__",
    "tool",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
