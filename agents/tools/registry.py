"""A tool is a name, a description, a JSON schema of its arguments and a function.

Tool functions take a ToolContext and the validated arguments and return a small JSON-able
dict. Failures the model should hear about raise ToolError; the runtime turns any
exception into an error result for the model rather than failing the turn.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import jsonschema

from agents.providers.base import ToolSpec


class ToolError(Exception):
    """A failure to report back to the model (bad arguments, nothing found …)."""


@dataclass(frozen=True)
class ToolContext:
    agent_slug: str
    conversation_id: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    function: Callable[..., dict]
    # A sink ends the turn and moves the conversation to this status.
    sink: str | None = None
    _validator: jsonschema.Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        jsonschema.Draft202012Validator.check_schema(self.parameters)
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.parameters))

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def run(self, context: ToolContext, arguments: dict) -> dict:
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "arguments"
            raise ToolError(f"Invalid arguments ({where}): {errors[0].message}")
        return self.function(context, **arguments)


_REGISTRY: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    if tool.name in _REGISTRY:
        raise ValueError(f"Tool {tool.name!r} is registered twice.")
    _REGISTRY[tool.name] = tool
    return tool


def get_tool(name: str) -> Tool | None:
    return _REGISTRY.get(name)


def registered() -> dict[str, Tool]:
    return dict(sorted(_REGISTRY.items()))
