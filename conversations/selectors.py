from decimal import Decimal

from django.contrib.auth.models import User
from django.db.models import DecimalField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from conversations import hot_path_sql
from conversations.models import Conversation, ConversationId, Turn
from infrastructure.errors import NotFound


def can_view_all(user: User) -> bool:
    return user.is_staff and user.has_perm("conversations.view_conversation")


def conversations_visible_to(user: User) -> QuerySet[Conversation]:
    """A user's own conversations; staff with the view permission see all."""
    queryset = Conversation.objects.all()
    return queryset if can_view_all(user) else queryset.filter(owner=user)


def conversations_for_output(user: User) -> QuerySet[Conversation]:
    """The visible conversations with what their API representation needs: the agent and
    the cost of their turns (a subquery per row, so only where it is shown)."""
    return (
        conversations_visible_to(user)
        .select_related("agent")
        .annotate(
            total_cost_usd=Coalesce(
                Subquery(
                    Turn.objects.filter(conversation=OuterRef("pk"))
                    .values("conversation")
                    .annotate(total=Sum("cost_usd"))
                    .values("total")
                ),
                Value(Decimal("0")),
                output_field=DecimalField(max_digits=14, decimal_places=6),
            )
        )
    )


def turn_visible_to(user: User, conversation_id: ConversationId, number: int) -> Turn | None:
    """A turn of a conversation the user may see (the owner's; staff with the view
    permission see all), or None. Its agent comes from the configuration snapshot when
    rendered, not from a join."""
    owner_id = None if can_view_all(user) else user.pk
    return hot_path_sql.turn_by_number(conversation_id, number, owner_id=owner_id)


def conversation_locked(
    conversation_id: ConversationId, *, owner: User | None = None
) -> Conversation:
    """The conversation, its row locked until the transaction ends (with `owner`, only
    that user's). Raises NotFound otherwise."""
    conversation = hot_path_sql.conversation_for_update(
        conversation_id, owner_id=owner.pk if owner is not None else None
    )
    if conversation is None:
        raise NotFound()
    return conversation


def turns_of(conversation: Conversation) -> QuerySet[Turn]:
    return Turn.objects.filter(conversation=conversation).select_related("agent").order_by("number")


def conversation_for_status_change(
    user: User, conversation_id: ConversationId
) -> Conversation | None:
    """The owner, or staff allowed to change conversations (operators)."""
    queryset = Conversation.objects.filter(pk=conversation_id)
    if not (user.is_staff and user.has_perm("conversations.change_conversation")):
        queryset = queryset.filter(owner=user)
    return queryset.first()


def recent_replies(
    *, conversation_id: ConversationId, before_number: int, limit: int
) -> list[tuple[int, str, str, str]]:
    """The conversation's last `limit` completed turns before `before_number`, newest
    first, as (number, input, output, output hash): the model's history and the replies
    anti-echo compares with."""
    return hot_path_sql.recent_replies(conversation_id, before_number=before_number, limit=limit)


def turn_with_turn_id(conversation_id: ConversationId, turn_id: str) -> Turn | None:
    """The conversation's turn submitted under `turn_id`, if any."""
    return Turn.objects.filter(conversation_id=conversation_id, turn_id=turn_id).first()


def pending_statuses(conversation_id: ConversationId) -> set[str]:
    """The statuses among the conversation's queued and running turns."""
    return hot_path_sql.pending_statuses(conversation_id)
