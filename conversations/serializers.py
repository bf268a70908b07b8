from datetime import UTC, datetime
from decimal import Decimal

from django.core.validators import RegexValidator
from django.db.models import Sum
from rest_framework import serializers

from agents import snapshot
from conversations.models import Conversation, Turn
from infrastructure.prefer import MAX_WAIT_S

TURN_ID_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9_-]{1,64}$", "Use 1 to 64 characters of A-Z, a-z, 0-9, _ and -."
)
MAX_TEXT = 8000


class ConversationCreateInput(serializers.Serializer):
    agent = serializers.SlugField(required=False, allow_null=True, max_length=64)
    metadata = serializers.DictField(required=False, default=dict)

    def validate_metadata(self, value):
        if len(repr(value)) > 16_000:
            raise serializers.ValidationError("Keep metadata under 16 kB.")
        return value


class ConversationOutput(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    cost_usd = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "status",
            "agent",
            "turn_count",
            "cost_usd",
            "metadata",
            "created_at",
            "updated_at",
        ]

    def get_cost_usd(self, obj) -> str:
        total = getattr(obj, "total_cost_usd", None)
        if total is None:
            total = obj.turns.aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")
        return f"{total:.6f}"


class TurnCreateInput(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_TEXT, trim_whitespace=False)
    turn_id = serializers.CharField(
        required=False, max_length=64, validators=[TURN_ID_VALIDATOR], trim_whitespace=False
    )

    def validate_text(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class TurnOutput(serializers.ModelSerializer):
    conversation = serializers.UUIDField(source="conversation_id", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    error = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6, read_only=True)
    echo = serializers.SerializerMethodField()

    class Meta:
        model = Turn
        fields = [
            "id",
            "conversation",
            "number",
            "turn_id",
            "status",
            "input",
            "output",
            "agent",
            "intent",
            "error",
            "usage",
            "cost_usd",
            "echo",
            "created_at",
            "started_at",
            "completed_at",
            "latency_ms",
            "ttft_ms",
        ]

    def to_representation(self, turn: Turn) -> dict:
        """The declared fields, rendered by hand: DRF's field-by-field rendering costs
        about 0.5 ms per turn, on the two hottest endpoints (submit and long-poll).
        tests/test_turn_api.py checks that both renderings agree."""
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

    def get_error(self, obj) -> dict | None:
        return obj.error

    def get_usage(self, obj) -> dict:
        return obj.usage

    def get_echo(self, obj) -> dict | None:
        return obj.public_echo


def _agent_slug(turn: Turn) -> str | None:
    """The agent's slug, from the turn's loaded agent, else from the configuration
    snapshot (no join or query for a single turn)."""
    if turn.agent_id is None:
        return None
    if Turn.agent.is_cached(turn):
        return turn.agent.slug
    return snapshot.current().agent(turn.agent_id).slug


def _timestamp(value: datetime | None) -> str | None:
    """As DRF renders a DateTimeField: ISO 8601 in UTC, with a Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class WaitQuery(serializers.Serializer):
    wait = serializers.IntegerField(required=False, min_value=0, max_value=MAX_WAIT_S, default=0)
