"""What clients receive, each shape built in one place: a turn as the API shows it, the
envelope of a turn's events, and the data of the event that ends a turn (docs/api.md)."""

from datetime import UTC, datetime

from agents import snapshot
from conversations.models import Turn


def turn_payload(turn: Turn) -> dict:
    """The turn as the REST API shows it (also the finished turn a long-poll receives)."""
    return {
        "id": turn.pk,
        "conversation": str(turn.conversation_id),
        "number": turn.number,
        "turn_id": turn.turn_id,
        "status": turn.status,
        "input": turn.input,
        "output": turn.output,
        "agent": _agent_slug(turn),
        "intent": turn.intent,
        "error": turn.error,
        "usage": turn.usage,
        "cost_usd": f"{turn.cost_usd:.6f}",
        "echo": turn.public_echo,
        "created_at": _timestamp(turn.created_at),
        "started_at": _timestamp(turn.started_at),
        "completed_at": _timestamp(turn.completed_at),
        "latency_ms": turn.latency_ms,
        "ttft_ms": turn.ttft_ms,
    }


def turn_event(turn: Turn, event_type: str, **data) -> dict:
    """An event of the turn, before the buffer numbers it (`seq`)."""
    return {
        "type": event_type,
        "conversation": str(turn.conversation_id),
        "turn_id": turn.turn_id,
        "number": turn.number,
        **data,
    }


def turn_ending(turn: Turn) -> tuple[str, dict]:
    """The event that ends a finished turn's stream, from the turn: its type and data."""
    if turn.status == Turn.Status.COMPLETED:
        return "turn.completed", {
            "status": turn.status,
            "output": turn.output,
            "usage": turn.usage,
            "cost_usd": f"{turn.cost_usd:.6f}",
            "echo": turn.public_echo,
        }
    return "turn.failed", {"status": turn.status, "error": turn.error}


def _agent_slug(turn: Turn) -> str | None:
    """From the turn's loaded agent, else from the configuration snapshot: no query."""
    if turn.agent_id is None:
        return None
    if Turn.agent.is_cached(turn):
        return turn.agent.slug
    return snapshot.current().agent(turn.agent_id).slug


def _timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as DRF renders a DateTimeField."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
