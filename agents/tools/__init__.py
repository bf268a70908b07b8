"""The tool registry: the tools an agent may be given, defined in code."""

from agents.tools.registry import Tool, ToolContext, ToolError, get_tool, register, registered

# Importing the modules registers their tools.
from agents.tools import sinks  # noqa: F401  isort: skip
from agents.commerce import tools as commerce_tools  # noqa: F401  isort: skip

__all__ = ["Tool", "ToolContext", "ToolError", "get_tool", "register", "registered"]
