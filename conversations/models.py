import hashlib
import unicodedata
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


def normalize_text(text: str) -> str:
    """Case-, width- and whitespace-insensitive form used for hashing and echo checks."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_digest(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()


class Conversation(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active (the bot answers)"
        HANDED_OFF = "handed_off", "Handed off to a human"
        RESOLVED = "resolved", "Resolved"
        ESCALATED = "escalated", "Escalated"
        CLOSED = "closed", "Closed"

    SINKS = frozenset({Status.RESOLVED, Status.ESCALATED, Status.CLOSED})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="conversations"
    )
    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The last turn number handed out; incremented under the row lock (see turn_submit).
    turn_count = models.PositiveIntegerField(default=0, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    # Moving average of the customer's sentiment (-1 to 1), and for how many turns in a
    # row it has been below the agent's escalation threshold.
    mood = models.FloatField(null=True, blank=True, editable=False)
    low_mood_turns = models.PositiveSmallIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def group_name(self) -> str:
        """The channel-layer group its events are published to."""
        return conversation_group(self.id)


# A conversation's key as callers hold it: a UUID, or its text in a Celery task's arguments.
ConversationId = uuid.UUID | str


def conversation_group(conversation_id: uuid.UUID) -> str:
    return f"conversation.{conversation_id.hex}"


class Turn(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
    PENDING = frozenset({Status.QUEUED, Status.PROCESSING})
    # The intent of a turn that goes to a human because the customer's mood stayed low:
    # set when the turn is submitted (services.turn_submit), acted on when it runs.
    MOOD_ESCALATION = "mood_escalation"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    number = models.PositiveIntegerField()
    turn_id = models.CharField(max_length=64)
    input = models.TextField()
    input_hash = models.CharField(max_length=64)
    output = models.TextField(blank=True)
    output_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    intent = models.CharField(
        max_length=120,
        blank=True,
        help_text=(
            "Why this agent: rule:<name>, conversation_agent, default_agent, or "
            "mood_escalation (set at submission: the turn goes to a human)."
        ),
    )
    sentiment = models.FloatField(null=True, blank=True, help_text="Of the input, -1 to 1.")
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    echo = models.JSONField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    # What the turn's model calls cost; the built-in local model is free.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    model_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Time spent waiting for the model."
    )

    class Meta:
        # By the column, not the relation: ordering by "conversation" would join the
        # conversations to sort by their own ordering, in every query that keeps this one.
        ordering = ["conversation_id", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "number"], name="conversations_turn_unique_number"
            ),
            models.UniqueConstraint(
                fields=["conversation", "turn_id"], name="conversations_turn_unique_turn_id"
            ),
        ]
        # Partial indexes: they hold only the few turns not yet done, so the executor's
        # and recovery's reads stay small however many turns are completed, and finishing
        # a turn writes nothing to them.
        indexes = [
            models.Index(
                fields=["conversation", "number"],
                condition=Q(status__in=["queued", "processing"]),
                name="conversations_turn_pending",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="processing"),
                name="conversations_turn_leases",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(status="queued"),
                name="conversations_turn_queued",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} #{self.number}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def public_echo(self) -> dict | None:
        """The echo result as clients see it (the admin also shows the first output)."""
        if not self.echo:
            return None
        return {key: self.echo.get(key) for key in ("action", "similar_to", "score")}

    @property
    def usage(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}

    @property
    def error(self) -> dict | None:
        if not self.error_code:
            return None
        return {"code": self.error_code, "message": self.error_message}


class TurnStep(models.Model):
    """One step of a turn's agent loop: a model call or a tool call."""

    class Kind(models.TextChoices):
        MODEL_CALL = "model_call", "Model call"
        TOOL_CALL = "tool_call", "Tool call"

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=120, help_text="The model or the tool.")
    arguments = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1, help_text="The turn's attempt.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["turn_id", "attempt", "index"]  # the column: see Turn's ordering
        constraints = [
            models.UniqueConstraint(
                fields=["turn", "attempt", "index"], name="conversations_step_unique_index"
            )
        ]

    def __str__(self) -> str:
        return f"{self.turn} step {self.index}: {self.name}"
