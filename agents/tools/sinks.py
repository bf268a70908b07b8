"""Built-in tools that end the turn: they return an outcome, the caller applies it."""

from agents.models import Agent
from agents.tools.registry import Tool, ToolContext, ToolError, register

REASON = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 500, "description": "One short sentence."}
    },
    "additionalProperties": False,
}


def _sink(status: str):
    def run(context: ToolContext, reason: str = "") -> dict:
        return {"status": status, "reason": reason}

    return run


RESOLVE_CONVERSATION_TOOL = Tool(
    name="resolve_conversation",
    description="Mark the conversation resolved when the customer's request is fully "
    "answered and they need nothing more.",
    parameters=REASON,
    function=_sink("resolved"),
    sink="resolved",
)
HANDOFF_TO_HUMAN_TOOL = Tool(
    name="handoff_to_human",
    description="Hand the conversation to a human member of staff when the customer "
    "asks for a person or the request needs one.",
    parameters=REASON,
    function=_sink("handed_off"),
    sink="handed_off",
)
ESCALATE_TOOL = Tool(
    name="escalate",
    description="Escalate the conversation to a supervisor: complaints, legal threats, "
    "safety issues.",
    parameters=REASON,
    function=_sink("escalated"),
    sink="escalated",
)


def _transfer(context: ToolContext, agent: str, reason: str = "") -> dict:
    target = Agent.objects.filter(slug=agent, is_active=True).first()
    if target is None:
        raise ToolError(f"No active agent {agent!r}.")
    if target.slug == context.agent_slug:
        raise ToolError("The conversation is already with this agent.")
    return {"transferred_to": target.slug, "reason": reason}


TRANSFER_TO_AGENT_TOOL = Tool(
    name="transfer_to_agent",
    description="Hand the conversation to another agent (by its slug) better suited "
    "to the request; that agent answers from the next message on.",
    parameters={
        "type": "object",
        "properties": {
            "agent": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
            "reason": {"type": "string", "maxLength": 500},
        },
        "required": ["agent"],
        "additionalProperties": False,
    },
    function=_transfer,
    sink="transfer",
)


def register_tools() -> None:
    for tool in (
        RESOLVE_CONVERSATION_TOOL,
        HANDOFF_TO_HUMAN_TOOL,
        ESCALATE_TOOL,
        TRANSFER_TO_AGENT_TOOL,
    ):
        register(tool)
