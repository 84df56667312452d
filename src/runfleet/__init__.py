"""Keep thousands of asynchronous OpenAI runs in flight through one rate-limited poll loop.

The names below are imported on first use (PEP 562): importing the ``openai`` SDK takes over a
second, and ``runfleet sim`` or ``runfleet --help`` need none of it.

The ``if TYPE_CHECKING`` block is the one list of public names: type checkers read it as it
stands, and at import this module reads the same lines from its own source to learn where each
name lives, so adding a name is adding one ``from .home import Name as Name`` line there.
"""

from __future__ import annotations

import ast
import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .admission.quota import Priority as Priority
    from .admission.quota import RequestQuota as RequestQuota
    from .admission.shared import RedisLimits as RedisLimits
    from .engine.feeder import Submission as Submission
    from .engine.handle import RunHandle as RunHandle
    from .errors import AmbiguousCreate as AmbiguousCreate
    from .errors import AuthError as AuthError
    from .errors import FleetClosed as FleetClosed
    from .errors import QuotaError as QuotaError
    from .errors import QuotaExhausted as QuotaExhausted
    from .errors import RedisUnavailable as RedisUnavailable
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
    from .polling.policy import PollPolicy as PollPolicy
    from .polling.schedule import Backoff as Backoff
    from .relay import RelayError as RelayError
    from .relay import WebhookRelay as WebhookRelay
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


def _homes() -> dict[str, str]:
    """Map each public name to its module, as the ``if TYPE_CHECKING`` block above imports it."""
    # The loader's source works from a zip as from a directory; a bundle that ships only
    # compiled files has none, and says so rather than failing somewhere less clear.
    get_source = getattr(__spec__.loader if __spec__ else None, "get_source", None)
    source = get_source(__name__) if get_source is not None else None
    if source is None:
        raise ImportError(
            "runfleet reads its public names from its own source (runfleet/__init__.py), "
            "which this installation does not include; install it with its .py files"
        )
    tree = ast.parse(source)
    block = next(
        node.body
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    return {
        alias.asname or alias.name: "." * line.level + (line.module or "")
        for line in block
        if isinstance(line, ast.ImportFrom)
        for alias in line.names
    }


_HOMES = _homes()
"""Where each public name lives, relative to this package."""

__version__ = _version("runfleet")

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
