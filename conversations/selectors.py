from decimal import Decimal

from django.db import connections
from django.db.models import DecimalField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from conversations.models import Conversation, Turn
from infrastructure import raw_rows as rows


def can_view_all(user) -> bool:
    return user.is_staff and user.has_perm("conversations.view_conversation")


def conversations_visible_to(user) -> QuerySet[Conversation]:
    """A user's own conversations; staff with the view permission see all."""
    queryset = Conversation.objects.all()
    return queryset if can_view_all(user) else queryset.filter(owner=user)


def conversations_for_output(user) -> QuerySet[Conversation]:
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


def turn_visible_to(user, conversation_id, number: int) -> Turn | None:
    """A turn of a conversation the user may see (the owner's; staff with the view
    permission see all), or None. Every long-poll asks, so in SQL: the ORM takes twice as
    long to build this query as the database to answer it. Its agent comes from the
    configuration snapshot when rendered, not from a join."""
    connection = connections[Turn.objects.db]
    sql = f"SELECT {rows.columns(Turn, 't')} FROM conversations_turn t"  # noqa: S608
    params = []
    if not can_view_all(user):
        sql += " JOIN conversations_conversation c ON c.id = t.conversation_id AND c.owner_id = %s"
        params.append(user.pk)
    sql += " WHERE t.conversation_id = %s AND t.number = %s"
    params += [Turn.db_value("conversation", conversation_id, connection), number]
    return rows.select_one(Turn, sql, params)


def conversation_locked(conversation_id, *, owner=None) -> Conversation:
    """The conversation, its row locked until the transaction ends (with `owner`, only
    that user's; Conversation.DoesNotExist otherwise). Every submission asks, so in SQL:
    the ORM takes twice as long to build this query as the database to answer it. SQLite
    has no row locks: the embedded mode's transactions take the database's write lock."""
    connection = connections[Conversation.objects.db]
    sql = f"SELECT {rows.columns(Conversation)} FROM conversations_conversation"  # noqa: S608
    sql += " WHERE id = %s"
    params = [Turn.db_value("conversation", conversation_id, connection)]
    if owner is not None:
        sql += " AND owner_id = %s"
        params.append(owner.pk)
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    conversation = rows.select_one(Conversation, sql, params)
    if conversation is None:
        raise Conversation.DoesNotExist()
    return conversation


def turns_of(conversation: Conversation) -> QuerySet[Turn]:
    return Turn.objects.filter(conversation=conversation).select_related("agent").order_by("number")


def conversation_for_status_change(user, conversation_id) -> Conversation | None:
    """The owner, or staff allowed to change conversations (operators)."""
    queryset = Conversation.objects.filter(pk=conversation_id)
    if not (user.is_staff and user.has_perm("conversations.change_conversation")):
        queryset = queryset.filter(owner=user)
    return queryset.first()


def recent_replies(*, conversation_id, before_number: int, limit: int):
    """The conversation's last `limit` completed turns before `before_number`, newest
    first, as (number, input, output, output hash): the model's history and the replies
    anti-echo compares with, in one query (in SQL: it runs for every turn, and the ORM
    takes three times as long to build it as the database to answer it)."""
    connection = connections[Turn.objects.db]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT number, input, output, output_hash FROM conversations_turn"
            " WHERE conversation_id = %s AND status = %s AND number < %s"
            " ORDER BY number DESC LIMIT %s",
            [
                Turn.db_value("conversation", conversation_id, connection),
                Turn.Status.COMPLETED,
                before_number,
                limit,
            ],
        )
        return [tuple(row) for row in cursor.fetchall()]


_PENDING_STATUSES_SQL = (
    "SELECT DISTINCT status FROM conversations_turn"  # noqa: S608 (constants)
    f" WHERE conversation_id = %s AND status IN ({Turn.PENDING_SQL})"
)


def turn_with_turn_id(conversation_id, turn_id: str) -> Turn | None:
    """The conversation's turn submitted under `turn_id`, if any. Every submission asks,
    and nearly always there is none: that answer comes from one statement in SQL, which
    the ORM takes longer to build than the database to answer."""
    connection = connections[Turn.objects.db]
    return rows.select_one(
        Turn,
        f"SELECT {rows.columns(Turn)} FROM conversations_turn"  # noqa: S608
        " WHERE conversation_id = %s AND turn_id = %s",
        [Turn.db_value("conversation", conversation_id, connection), turn_id],
    )


def pending_statuses(conversation_id) -> set[str]:
    """The statuses among the conversation's queued and running turns (the executor asks
    after every turn, so in SQL too)."""
    connection = connections[Turn.objects.db]
    with connection.cursor() as cursor:
        cursor.execute(
            _PENDING_STATUSES_SQL,
            [Turn.db_value("conversation", conversation_id, connection)],
        )
        return {status for (status,) in cursor.fetchall()}
