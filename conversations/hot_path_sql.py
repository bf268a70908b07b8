"""The statements every turn runs, in SQL.

Each is here because the ORM spent longer building it than the database spent answering
it; the figure that keeps it is on its line (docs/performance.md has the runs). Whole rows
are read by their columns' names and written by infrastructure/raw_rows.py, each value
prepared by its own field, so what comes back is what the ORM would give.
"""

from datetime import datetime
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from conversations.models import Conversation, ConversationId, Turn, TurnStep
from infrastructure import raw_rows

# Literals, not parameters: a prepared statement's generic plan cannot match the partial
# index conversations_turn_pending against "status IN ($1, $2)".
PENDING_SQL = ", ".join(f"'{status}'" for status in sorted(Turn.PENDING))
PENDING_STATUSES_SQL = (
    "SELECT DISTINCT status FROM conversations_turn"  # noqa: S608 (constants)
    f" WHERE conversation_id = %s AND status IN ({PENDING_SQL})"
)

# The first pending turn of the conversation, if it is queued or its worker is gone (its
# lease ran out) with attempts left: processing, with the next attempt and a lease.
_CLAIM_SQL = """
UPDATE conversations_turn
SET status = 'processing', attempt = attempt + 1, lease_expires_at = %s,
    started_at = COALESCE(started_at, %s)
WHERE id = (
    SELECT pending.id FROM conversations_turn AS pending
    WHERE pending.conversation_id = %s AND pending.status IN ({pending})
    ORDER BY pending.number
    LIMIT 1 {for_update}
) AND (status = 'queued' OR (lease_expires_at < %s AND attempt < %s))
RETURNING {columns}, (
    SELECT conversation.agent_id FROM conversations_conversation AS conversation
    WHERE conversation.id = conversations_turn.conversation_id
) AS conversation_agent_id
"""


def _connection() -> BaseDatabaseWrapper:
    return connections[Turn.objects.db]


def _param(model: type[Model], field: str, value: object, connection: BaseDatabaseWrapper) -> Any:
    """A value as this database takes it in raw SQL (a uuid in PostgreSQL, hex in SQLite);
    Any, the driver's own type, as Field.get_db_prep_value returns it."""
    model_field = model._meta.get_field(field)
    assert isinstance(model_field, Field)  # a column, not a reverse relation
    return model_field.get_db_prep_value(value, connection)


def conversation_for_update(
    conversation_id: ConversationId, *, owner_id: int | None
) -> Conversation | None:
    """The conversation, its row locked until the transaction ends. Every submission: 0.51
    to 0.55 ms of CPU against 0.75 to 0.78 with the ORM. SQLite has no row locks: the
    embedded mode's transactions take the database's write lock."""
    connection = _connection()
    sql = f"SELECT {raw_rows.columns(Conversation)} FROM conversations_conversation"  # noqa: S608
    sql += " WHERE id = %s"
    params = [_param(Conversation, "id", conversation_id, connection)]
    if owner_id is not None:
        sql += " AND owner_id = %s"
        params.append(owner_id)
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return raw_rows.select_one(Conversation, sql, params)


def turn_by_number(
    conversation_id: ConversationId, number: int, *, owner_id: int | None
) -> Turn | None:
    """A turn, of the owner's conversation when `owner_id` is given. Every long-poll: 0.37 to
    0.39 ms of CPU against 0.68 to 0.78 with the ORM."""
    connection = _connection()
    sql = f"SELECT {raw_rows.columns(Turn, 't')} FROM conversations_turn t"  # noqa: S608
    params: list[object] = []
    if owner_id is not None:
        sql += " JOIN conversations_conversation c ON c.id = t.conversation_id AND c.owner_id = %s"
        params.append(owner_id)
    sql += " WHERE t.conversation_id = %s AND t.number = %s"
    params += [_param(Turn, "conversation", conversation_id, connection), number]
    return raw_rows.select_one(Turn, sql, params)


def claim_next_turn(
    conversation_id: ConversationId, *, lease_until: datetime, now: datetime, max_attempts: int
) -> Turn | None:
    """Claim the first pending turn (see _CLAIM_SQL), with `conversation_agent_id` set.
    One statement: the worker's CPU per turn in process 12.1 against 12.9 ms with the ORM's
    select-then-update."""
    connection = _connection()
    if not connection.features.can_return_rows_from_bulk_insert:
        raise RuntimeError("Turns need PostgreSQL, or SQLite 3.35 or newer (UPDATE … RETURNING).")
    sql = _CLAIM_SQL.format(
        pending=PENDING_SQL,
        for_update="FOR UPDATE" if connection.features.has_select_for_update else "",
        columns=raw_rows.columns(Turn, "conversations_turn"),
    )
    params = [
        _param(Turn, "lease_expires_at", lease_until, connection),
        _param(Turn, "started_at", now, connection),
        _param(Turn, "conversation", conversation_id, connection),
        _param(Turn, "lease_expires_at", now, connection),
        max_attempts,
    ]
    return raw_rows.select_one(Turn, sql, params)


def recent_replies(
    conversation_id: ConversationId, *, before_number: int, limit: int
) -> list[tuple[int, str, str, str]]:
    """(number, input, output, output hash) of the last completed turns, newest first. Every
    turn: the ORM took three times as long to build it as PostgreSQL to answer."""
    connection = _connection()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT number, input, output, output_hash FROM conversations_turn"
            " WHERE conversation_id = %s AND status = %s AND number < %s"
            " ORDER BY number DESC LIMIT %s",
            [
                _param(Turn, "conversation", conversation_id, connection),
                Turn.Status.COMPLETED,
                before_number,
                limit,
            ],
        )
        return [tuple(row) for row in cursor.fetchall()]


def pending_statuses(conversation_id: ConversationId) -> set[str]:
    """After every turn; in SQL for the partial index (PENDING_SQL)."""
    connection = _connection()
    with connection.cursor() as cursor:
        cursor.execute(
            PENDING_STATUSES_SQL, [_param(Turn, "conversation", conversation_id, connection)]
        )
        return {status for (status,) in cursor.fetchall()}


# Writes: without the query compiler, a usage record cost 0.19 to 0.25 against 0.67 to
# 0.70 ms of CPU; in process the submission 6.4 to 6.9 against 7.6 to 8.2 ms.


def insert_turn(turn: Turn) -> Turn:
    return raw_rows.insert(turn)


def save_conversation(conversation: Conversation, fields: list[str]) -> None:
    raw_rows.update(conversation, fields)


def insert_steps(steps: list[TurnStep]) -> None:
    """All of a turn's steps in one INSERT: the drain 7.08 against 7.54 ms with bulk_create."""
    raw_rows.insert_all(steps)


def finish_turn(turn: Turn, values: dict[str, object]) -> bool:
    """Write `values` if the turn is still processing under this attempt (fencing)."""
    return bool(
        raw_rows.update_where(
            Turn, values, pk=turn.pk, attempt=turn.attempt, status=Turn.Status.PROCESSING
        )
    )
