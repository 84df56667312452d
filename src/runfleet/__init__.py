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
from .errors import RunTimeout as RunTimeout
from .errors import ToolError as ToolError

__version__ = _version("runfleet")

__all__ = [
    "AuthError",
    "FleetClosed",
    "QuotaError",
    "QuotaExhausted",
    "RunCancelled",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunIncomplete",
    "RunNotFound",
    "RunTimeout",
    "RunfleetError",
    "ToolError",
    "__version__",
]
