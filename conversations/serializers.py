from decimal import Decimal

from django.core.validators import RegexValidator
from django.db.models import Sum
from rest_framework import serializers

from conversations.models import Conversation, Turn
from conversations.payloads import turn_payload
from infrastructure.api_fields import StrictCharField, StrictSlugField
from infrastructure.prefer import MAX_WAIT_S

TURN_ID_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9_-]{1,64}$", "Use 1 to 64 characters of A-Z, a-z, 0-9, _ and -."
)
MAX_TEXT = 8000


class ConversationCreateInput(serializers.Serializer):
    agent = StrictSlugField(required=False, allow_null=True, max_length=64)
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
    text = StrictCharField(max_length=MAX_TEXT, trim_whitespace=False)
    turn_id = StrictCharField(
        required=False, max_length=64, validators=[TURN_ID_VALIDATOR], trim_whitespace=False
    )

    def validate_text(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class TurnOutput(serializers.ModelSerializer):
    """The turn's fields, declared for the schema; the rendering is payloads.turn_payload."""

    conversation = serializers.UUIDField(source="conversation_id", read_only=True)
    agent = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True, help_text="Null until routed."
    )
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
        return turn_payload(turn)

    def get_error(self, obj) -> dict | None:
        return obj.error

    def get_usage(self, obj) -> dict:
        return obj.usage

    def get_echo(self, obj) -> dict | None:
        return obj.public_echo


class ConversationPage(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ConversationOutput(many=True)


class TurnPage(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TurnOutput(many=True)


class WaitQuery(serializers.Serializer):
    wait = serializers.IntegerField(required=False, min_value=0, max_value=MAX_WAIT_S, default=0)
