"""Tools the model can call: ``@tool`` makes one from a function, ``ToolRegistry`` answers calls.

:mod:`~runfleet.tools.definition` holds what a tool is (its schema, its arguments),
:mod:`~runfleet.tools.registry` the rounds that answer a run's calls.
"""

from .definition import Tool as Tool
from .definition import ToolKind as ToolKind
from .definition import tool as tool
from .registry import OnToolError as OnToolError
from .registry import ToolCall as ToolCall
from .registry import ToolOutput as ToolOutput
from .registry import ToolRegistry as ToolRegistry

__all__ = ["OnToolError", "Tool", "ToolCall", "ToolKind", "ToolOutput", "ToolRegistry", "tool"]
