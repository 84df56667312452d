"""An OpenAI-compatible simulator of asynchronous runs, to test and benchmark without a key."""

from __future__ import annotations

from .app import SimApp as SimApp
from .app import create_app as create_app
from .scenario import BUILTIN_SCENARIOS as BUILTIN_SCENARIOS
from .scenario import Scenario as Scenario
from .scenario import ScenarioError as ScenarioError
from .scenario import load_scenario as load_scenario
from .server import SimServer as SimServer
from .server import serve as serve

__all__ = [
    "BUILTIN_SCENARIOS",
    "Scenario",
    "ScenarioError",
    "SimApp",
    "SimServer",
    "create_app",
    "load_scenario",
    "serve",
]
