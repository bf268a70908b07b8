"""Writes of the conversations app: conversations, turn submission and the turn state machine.

Every status change of a turn is one guarded UPDATE (a compare-and-set on status and
attempt), so a stale worker, a cancelled turn or a concurrent recovery can never overwrite
a newer state: the losing write matches no row and changes nothing.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents import snapshot
from agents.models import Agent
from conversations import events, hot_path_sql, payloads, selectors
from conversations.dispatch import enqueue_conversation
from conversations.models import Conversation, ConversationId, Turn, text_digest
from conversations.mood import next_mood, sentiment
from infrastructure.errors import (
    ConversationBusy,
    ConversationClosed,
    IdempotencyMismatch,
    InvalidInput,
)


def conversation_create(
    *, owner: User, agent_slug: str | None = None, metadata: dict[str, object] | None = None
) -> Conversation:
    if agent_slug:
        agent = Agent.objects.filter(slug=agent_slug, is_active=True).first()
        if agent is None:
            raise InvalidInput(
                "No active agent with this slug.", details={"agent": [f"Unknown: {agent_slug}"]}
            )
    else:
        agent = Agent.objects.filter(is_default=True, is_active=True).first()
        if agent is None:
            raise InvalidInput(
                "No default agent is configured; name one.",
                details={"agent": ["Required: no default agent is configured."]},
            )
    return Conversation.objects.create(owner=owner, agent=agent, metadata=metadata or {})


@transaction.atomic
def conversation_close(*, conversation: Conversation) -> Conversation:
    """Close the conversation; its queued or running turns are cancelled."""
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if locked.status != Conversation.Status.CLOSED:
        locked.status = Conversation.Status.CLOSED
        locked.save(update_fields=["status", "updated_at"])
        _cancel_pending(locked, reason="The conversation was closed.")
    return locked


@dataclass(frozen=True)
class Submission:
    turn: Turn
    replayed: bool


def turn_submit(
    *, conversation_id: uuid.UUID, text: str, turn_id: str | None = None, owner: User | None = None
) -> Submission:
    """Record a turn and have it executed, exactly once per (conversation, turn_id).

    The conversation row is locked for the whole check-and-insert, which serializes
    submissions to one conversation: that is what makes numbers gapless and the
    idempotency check race-free. The unique constraints are the backstop.
    Validation (text length, turn_id format) is the caller's; with `owner`, only that
    user's conversation is found (NotFound otherwise).
    """
    generated = not turn_id  # a fresh id: no earlier submission can have it
    turn_id = turn_id or uuid.uuid4().hex
    input_hash = text_digest(text)
    score = sentiment(text)
    config = snapshot.current()  # outside the transaction: a reload holds no row lock
    with transaction.atomic():
        conversation = selectors.conversation_locked(conversation_id, owner=owner)
        agent = config.agent(conversation.agent_id)
        existing = None if generated else selectors.turn_with_turn_id(conversation.pk, turn_id)
        if existing is not None:
            if existing.input_hash != input_hash:
                raise IdempotencyMismatch()
            return Submission(existing, replayed=True)
        if conversation.status != Conversation.Status.ACTIVE:
            raise ConversationClosed(
                f"This conversation is {conversation.get_status_display().lower()}."
            )
        strategy = agent.double_text
        if strategy == Agent.DoubleText.REJECT and _pending(conversation).exists():
            raise ConversationBusy()
        if strategy == Agent.DoubleText.INTERRUPT:
            _cancel_pending(conversation, reason="Interrupted by a newer message.")

        conversation.turn_count += 1
        escalate = _follow_mood(conversation, agent, score)
        hot_path_sql.save_conversation(
            conversation, ["turn_count", "mood", "low_mood_turns", "updated_at"]
        )
        turn = hot_path_sql.insert_turn(
            Turn(
                conversation=conversation,
                number=conversation.turn_count,
                turn_id=turn_id,
                input=text,
                input_hash=input_hash,
                sentiment=score,
                intent=Turn.MOOD_ESCALATION if escalate else "",
            )
        )
        # Each after-commit step on its own: a failed publish must not stop the enqueue.
        # If both fail (Redis down), the turn is recorded and recovery enqueues it later.
        transaction.on_commit(
            lambda: events.publish(turn=turn, event_type="turn.accepted", replayed=False),
            robust=True,
        )
        transaction.on_commit(lambda: enqueue_conversation(turn.conversation_id), robust=True)
    return Submission(turn, replayed=False)


def _follow_mood(conversation: Conversation, agent: Agent, score: float) -> bool:
    """Fold the new input's sentiment into the conversation's mood, in submission order,
    and say whether the mood has now stayed below the agent's threshold long enough for
    the turn to go to a human instead of the bot."""
    threshold = agent.escalate_mood_below
    conversation.mood = next_mood(conversation.mood, score)
    low = threshold is not None and conversation.mood < threshold
    conversation.low_mood_turns = conversation.low_mood_turns + 1 if low else 0
    return low and conversation.low_mood_turns >= agent.escalate_after_turns


def _pending(conversation: Conversation) -> QuerySet[Turn]:
    return Turn.objects.filter(conversation=conversation, status__in=Turn.PENDING)


def _cancel_pending(conversation: Conversation, *, reason: str) -> None:
    """Cancel queued and running turns. Call while holding the conversation's row lock.

    A running worker notices when its stream is ended by the terminal event sent here,
    and its own completion write then matches no row (status is no longer processing).
    """
    # Locked, so a worker's completion cannot slip in between this read and the update:
    # its fenced write waits for this transaction, then matches no row.
    pending = list(_pending(conversation).select_for_update())
    if not pending:
        return
    cancelled = {
        "status": Turn.Status.CANCELLED,
        "error_code": "cancelled",
        "error_message": reason,
        "completed_at": timezone.now(),
        "lease_expires_at": None,
    }
    Turn.objects.filter(pk__in=[t.pk for t in pending]).update(**cancelled)

    def announce() -> None:
        for turn in pending:
            for name, value in cancelled.items():
                setattr(turn, name, value)
            event_type, data = payloads.turn_ending(turn)
            events.publish(turn=turn, event_type=event_type, **data)

    transaction.on_commit(announce, robust=True)


def conversation_apply_sink(
    *, conversation_id: ConversationId, sink: str, transfer_to: str | None
) -> None:
    """Apply an agent's sink or transfer to the conversation, if it is still active.

    Call inside the transaction that completes the turn. A sink ends the conversation for
    the bot, so turns queued after this one are cancelled.
    """
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
    if conversation.status != Conversation.Status.ACTIVE:
        return
    if sink == "transfer":
        target = Agent.objects.filter(slug=transfer_to, is_active=True).first()
        if target is not None:
            conversation.agent = target
            conversation.save(update_fields=["agent", "updated_at"])
    else:
        conversation.status = sink
        conversation.save(update_fields=["status", "updated_at"])
        _cancel_pending(conversation, reason="The conversation was handed on by the agent.")
    transaction.on_commit(lambda: events.publish_conversation_state(conversation), robust=True)


# --- The turn state machine, driven by the executor ---------------------------------------


def _lease_deadline() -> datetime:
    return timezone.now() + timedelta(seconds=settings.TURN_LEASE_SECONDS)


def turn_claim_next(*, conversation_id: ConversationId) -> Turn | None:
    """Claim the conversation's next turn for execution, in number order.

    Precondition: the caller holds the conversation's execution lock. Returns the turn
    moved to `processing` with a new attempt number and lease (and, as
    `conversation_agent_id`, the conversation's agent now), or None when there is
    nothing to run now. A `processing` turn whose lease has not expired blocks the ones
    after it (its worker may still be alive); one whose worker was lost too often is
    failed here, and the next turn is claimed.
    """
    while True:
        now = timezone.now()
        turn = hot_path_sql.claim_next_turn(
            conversation_id,
            lease_until=_lease_deadline(),
            now=now,
            max_attempts=settings.TURN_MAX_ATTEMPTS,
        )
        if turn is not None:
            return turn
        lost = Turn.objects.filter(
            conversation_id=conversation_id,
            status=Turn.Status.PROCESSING,
            lease_expires_at__lt=now,
            attempt__gte=settings.TURN_MAX_ATTEMPTS,
        ).first()
        if lost is None:
            return None
        with transaction.atomic():
            _fail_worker_lost(lost)


def turn_extend_lease(*, turn: Turn) -> bool:
    """Renew the lease of the current attempt; False when the attempt is no longer current."""
    return bool(
        Turn.objects.filter(pk=turn.pk, attempt=turn.attempt, status=Turn.Status.PROCESSING).update(
            lease_expires_at=_lease_deadline()
        )
    )


def turn_finish(*, turn: Turn, status: str, **fields: object) -> bool:
    """Write the outcome of the current attempt. A stale attempt's write changes nothing.

    Returns whether the write happened; only then may the terminal event be published.
    """
    now = timezone.now()
    latency_ms = int((now - turn.created_at).total_seconds() * 1000)
    values = {"status": status, "completed_at": now, "latency_ms": latency_ms, **fields}
    updated = hot_path_sql.finish_turn(turn, {**values, "lease_expires_at": None})
    if updated:
        for name, value in values.items():
            setattr(turn, name, value)
    return updated


def _fail_worker_lost(turn: Turn) -> bool:
    message = f"The worker running this turn was lost {turn.attempt} times."
    updated = Turn.objects.filter(
        pk=turn.pk,
        attempt=turn.attempt,
        status=Turn.Status.PROCESSING,
        lease_expires_at__lt=timezone.now(),  # not renewed meanwhile by a live worker
    ).update(
        status=Turn.Status.FAILED,
        error_code="worker_lost",
        error_message=message,
        completed_at=timezone.now(),
        lease_expires_at=None,
    )
    if updated:
        turn.status, turn.error_code = Turn.Status.FAILED, "worker_lost"
        turn.error_message = message
        event_type, data = payloads.turn_ending(turn)
        transaction.on_commit(lambda: events.publish(turn=turn, event_type=event_type, **data))
    return bool(updated)


def turns_recover() -> dict[str, int]:
    """Periodic recovery (docs/architecture.md, Turn engine).

    - `processing` turns whose lease expired: their worker is gone. Back to `queued` for
      another attempt, or `failed` with worker_lost after TURN_MAX_ATTEMPTS attempts.
    - `queued` turns older than TURN_REQUEUE_AFTER_SECONDS: their enqueue was lost.
    Their conversations are enqueued again; the execution lock keeps this harmless when a
    worker is in fact on them.
    """
    now = timezone.now()
    conversations: set[uuid.UUID] = set()
    requeued = failed = 0
    expired = Turn.objects.filter(status=Turn.Status.PROCESSING, lease_expires_at__lt=now)
    for turn in expired.only("pk", "attempt", "conversation_id", "turn_id", "number"):
        with transaction.atomic():
            if turn.attempt >= settings.TURN_MAX_ATTEMPTS:
                failed += _fail_worker_lost(turn)
            elif Turn.objects.filter(
                pk=turn.pk,
                attempt=turn.attempt,
                status=Turn.Status.PROCESSING,
                lease_expires_at__lt=now,  # not renewed meanwhile by a live worker
            ).update(status=Turn.Status.QUEUED, lease_expires_at=None):
                requeued += 1
        conversations.add(turn.conversation_id)
    stale_before = now - timedelta(seconds=settings.TURN_REQUEUE_AFTER_SECONDS)
    conversations.update(
        Turn.objects.filter(status=Turn.Status.QUEUED, created_at__lt=stale_before)
        .values_list("conversation_id", flat=True)
        .distinct()
    )
    for conversation_id in conversations:
        enqueue_conversation(conversation_id)
    return {"requeued": requeued, "failed": failed, "conversations": len(conversations)}
