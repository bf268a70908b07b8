"""Demo data of the agents app, loaded by `manage.py load_demo_data`."""

from agents.models import Agent, AgentModel, LLMModel
from agents.tools import registered

SUPPORT_PROMPT = (
    "You are the customer support agent of an online shop. Answer briefly and factually "
    "from the shop's configuration; when you do not know, say so and offer a human."
)


def load() -> int:
    """Create the demo agents that do not exist yet; never overwrite staff edits."""
    created = 0
    has_default = Agent.objects.filter(is_default=True).exists()
    support, was_created = Agent.objects.get_or_create(
        slug="support",
        defaults={
            "name": "Customer support",
            "description": "Answers questions about orders, shipping and products.",
            "system_prompt": SUPPORT_PROMPT,
            "is_default": not has_default,
            "anti_echo": Agent.AntiEcho.REGENERATE,
            # Every tool of every app (commerce's included) but the transfer: there
            # is no other demo agent to transfer to.
            "tools": [name for name in registered() if name != "transfer_to_agent"],
            "escalate_mood_below": -0.5,
            "escalate_after_turns": 3,
        },
    )
    created += was_created
    if was_created:
        AgentModel.objects.create(agent=support, model=LLMModel.objects.get(name="local"))
    return created
