"""Keep thousands of asynchronous OpenAI runs in flight through one rate-limited poll loop."""

from __future__ import annotations

from importlib.metadata import version as _version

from .errors import AuthError as AuthError
from .errors import FleetClosed as FleetClosed
from .errors import QuotaError as QuotaError
from .errors import QuotaExhausted as QuotaExhausted
from .errors import RunCancelled as RunCancelled
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
from .handle import RunHandle as RunHandle
from .kinds.assistants import AssistantRunSpec as AssistantRunSpec
from .kinds.responses import ResponseSpec as ResponseSpec
from .learning import PollPolicy as PollPolicy
from .quota import Priority as Priority
from .quota import RequestQuota as RequestQuota
from .results import RunFigures as RunFigures
from .results import RunResult as RunResult
from .results import ToolRound as ToolRound
from .schedule import Backoff as Backoff
from .stats import FleetStats as FleetStats
from .tools import Tool as Tool
from .tools import ToolCall as ToolCall
from .tools import ToolOutput as ToolOutput
from .tools import ToolRegistry as ToolRegistry
from .tools import tool as tool
from .webhooks import ReceiverStats as ReceiverStats
from .webhooks import WebhookReceiver as WebhookReceiver

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
