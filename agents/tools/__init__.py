"""The tool registry: the tools an agent may be given, defined in code. Apps register
theirs when they start (agents.apps, commerce.apps)."""

from agents.tools.registry import Tool, ToolContext, ToolError, get_tool, register, registered

__all__ = ["Tool", "ToolContext", "ToolError", "get_tool", "register", "registered"]
