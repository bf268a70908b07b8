"""infrastructure/raw_rows.py: one-row writes without the query compiler, the same rows as the
ORM's."""

from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import UsageRecord
from billing.services import usage_record_create
from conversations import hot_path_sql, selectors
from conversations.models import Conversation, Turn, TurnStep
from infrastructure import raw_rows as rows
from tests.llm_helpers import model_make, provider_make
from tests.turn_helpers import TRANSACTIONAL

pytest_plugins = ["tests.turn_fixtures"]

pytestmark = pytest.mark.django_db


def _row(model, pk) -> dict:
    return model.objects.filter(pk=pk).values().get()


def _turn(conversation, number: int, **fields) -> Turn:
    return Turn(conversation=conversation, number=number, turn_id=f"t{number}", **fields)


def test_insert_writes_the_row_create_writes_and_sets_the_new_key(conversation):
    fields = {
        "input": "Where is my parcel?",
        "input_hash": "ab" * 32,
        "sentiment": -0.25,
        "echo": {"action": "flagged", "similar_to": 1, "score": 0.95},
        "cost_usd": Decimal("0.000123"),
    }
    by_orm = Turn.objects.create(conversation=conversation, number=1, turn_id="t1", **fields)
    started = timezone.now()

    turn = rows.insert(_turn(conversation, 2, **fields))

    assert turn.pk is not None
    assert (turn._state.adding, turn._state.db) == (False, "default")
    assert started <= turn.created_at <= timezone.now()
    written, expected = _row(Turn, turn.pk), _row(Turn, by_orm.pk)
    assert written["created_at"] == turn.created_at
    ignored = {"id", "number", "turn_id", "created_at"}
    assert {k: v for k, v in written.items() if k not in ignored} == {
        k: v for k, v in expected.items() if k not in ignored
    }
    assert (written["status"], written["attempt"], written["echo"]) == (
        Turn.Status.QUEUED,
        0,
        {"action": "flagged", "similar_to": 1, "score": 0.95},
    )


def test_a_usage_record_is_written_whole(conversation, support_agent):
    turn = rows.insert(_turn(conversation, 1, input="Hi", input_hash="0" * 64))
    llm = model_make(provider_make(kind="local"))

    record = usage_record_create(
        turn_id=turn.pk,
        agent_id=support_agent.pk,
        provider_id=llm.provider_id,
        model_id=llm.pk,
        attempt=2,
        input_tokens=11,
        output_tokens=22,
        cached_tokens=3,
        tokens_estimated=True,
        latency_ms=40,
        ttft_ms=None,
        outcome=UsageRecord.Outcome.RESET,
        error_class="timeout",
    )

    written = _row(UsageRecord, record.pk)
    assert written == {
        "id": record.pk,
        "turn_id": turn.pk,
        "agent_id": support_agent.pk,
        "provider_id": llm.provider_id,
        "model_id": llm.pk,
        "attempt": 2,
        "input_tokens": 11,
        "output_tokens": 22,
        "cached_tokens": 3,
        "tokens_estimated": True,
        "latency_ms": 40,
        "ttft_ms": None,
        "outcome": "reset",
        "error_class": "timeout",
        "created_at": record.created_at,
    }


def test_update_writes_only_the_fields_named_and_moves_auto_now(conversation):
    Conversation.objects.filter(pk=conversation.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    before = _row(Conversation, conversation.pk)
    conversation.turn_count = 7
    conversation.metadata = {"not": "written"}

    rows.update(conversation, ["turn_count", "updated_at"])

    after = _row(Conversation, conversation.pk)
    assert after["turn_count"] == 7
    assert after["metadata"] == before["metadata"]
    assert after["updated_at"] == conversation.updated_at > before["updated_at"]
    unchanged = set(before) - {"turn_count", "updated_at"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}


def test_update_of_a_row_that_is_gone_is_an_error_as_with_save(conversation):
    Conversation.objects.filter(pk=conversation.pk).delete()
    conversation.turn_count = 3

    with pytest.raises(DatabaseError, match="did not affect any rows"):
        rows.update(conversation, ["turn_count"])
    assert not Conversation.objects.exists()


def test_a_failed_write_marks_its_transaction_for_rollback_as_the_orm_does(conversation):
    rows.insert(_turn(conversation, 1, input="Hi", input_hash="0" * 64))

    with pytest.raises(TransactionManagementError), transaction.atomic():
        with pytest.raises(IntegrityError):
            rows.insert(_turn(conversation, 1, input="again", input_hash="1" * 64))
        Turn.objects.count()  # the transaction is done for: Django says so, not the database

    assert list(Turn.objects.values_list("input", flat=True)) == ["Hi"]


@pytest.mark.parametrize(
    "write",
    [
        lambda turn: rows.update_where(Turn, {"output": F("input")}, pk=turn.pk),
        lambda turn: rows.update_where(Turn, {"completed_at": Now()}, pk=turn.pk),
        lambda turn: rows.update_where(Turn, {"output": "x"}, pk=turn.pk, number=F("number")),
    ],
    ids=["F", "Now", "condition"],
)
def test_expressions_are_refused_before_anything_is_written(conversation, write):
    turn = rows.insert(_turn(conversation, 1, input="Hi", input_hash="0" * 64))

    with pytest.raises(TypeError, match="is an expression"):
        write(turn)
    assert (_row(Turn, turn.pk)["output"], _row(Turn, turn.pk)["completed_at"]) == ("", None)


def test_insert_refuses_a_row_that_has_its_key_already(conversation):
    with pytest.raises(ValueError, match="must be a new Turn"):
        rows.insert(_turn(conversation, 1, id=424242, input="Hi", input_hash="0" * 64))
    assert not Turn.objects.exists()


def _step(turn, index: int, **fields) -> TurnStep:
    return TurnStep(turn=turn, attempt=1, index=index, kind="tool_call", name="lookup", **fields)


def test_insert_all_writes_the_rows_bulk_create_writes_in_one_statement(conversation):
    turn = Turn.objects.create(conversation=conversation, number=1, turn_id="t1", input="Hi")
    ours = [
        _step(turn, 1, arguments={"order": "A-1"}, result=["shipped", 2], duration_ms=7),
        _step(turn, 2, arguments=None, error="timed out"),
        _step(turn, 3, result={"nested": {"ok": True}}),
    ]
    theirs = [
        _step(turn, index, **fields)
        for index, fields in enumerate(
            [
                {"arguments": {"order": "A-1"}, "result": ["shipped", 2], "duration_ms": 7},
                {"arguments": None, "error": "timed out"},
                {"result": {"nested": {"ok": True}}},
            ],
            start=1,
        )
    ]
    for step in theirs:
        step.attempt = 2

    with CaptureQueriesContext(connection) as statements:
        assert rows.insert_all(ours) is ours
    TurnStep.objects.bulk_create(theirs)

    assert len(statements) == 1
    assert [step.pk for step in ours] == sorted(step.pk for step in ours)
    for mine, orm in zip(ours, theirs, strict=True):
        written, expected = _row(TurnStep, mine.pk), _row(TurnStep, orm.pk)
        assert written.pop("created_at") == mine.created_at
        expected.pop("created_at")
        assert (written.pop("id"), written.pop("attempt")) == (mine.pk, 1)
        expected.pop("id"), expected.pop("attempt")
        assert written == expected
        assert mine._state.adding is False


def test_insert_all_writes_nothing_when_one_object_is_not_new(conversation):
    turn = Turn.objects.create(conversation=conversation, number=1, turn_id="t1", input="Hi")
    written = rows.insert(_step(turn, 1))

    with pytest.raises(ValueError, match="must be a new TurnStep"):
        rows.insert_all([_step(turn, 2), written])
    assert list(TurnStep.objects.values_list("index", flat=True)) == [1]


def test_insert_refuses_a_model_without_an_auto_key(alice, support_agent):
    with pytest.raises(TypeError, match="needs one table and an auto key"):
        rows.insert(Conversation(owner=alice, agent=support_agent))
    assert not Conversation.objects.exists()


def test_update_where_writes_only_rows_matching_every_condition(conversation, support_agent):
    turn = rows.insert(_turn(conversation, 1, input="Hi", input_hash="0" * 64, attempt=2))
    values = {"output": "Hello", "agent": support_agent, "echo": {"action": "flagged"}}

    assert rows.update_where(Turn, values, pk=turn.pk, attempt=1) == 0
    assert (_row(Turn, turn.pk)["output"], _row(Turn, turn.pk)["agent_id"]) == ("", None)

    assert rows.update_where(Turn, values, pk=turn.pk, attempt=2, status="queued") == 1
    written = _row(Turn, turn.pk)
    assert (written["output"], written["agent_id"], written["echo"]) == (
        "Hello",
        support_agent.pk,
        {"action": "flagged"},
    )


def test_update_where_refuses_a_condition_on_null(conversation):
    turn = rows.insert(_turn(conversation, 1, input="Hi", input_hash="0" * 64))

    with pytest.raises(ValueError, match="lease_expires_at=None"):
        rows.update_where(Turn, {"output": "x"}, pk=turn.pk, lease_expires_at=None)
    assert _row(Turn, turn.pk)["output"] == ""


POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements: PostgreSQL"
)


def _prepared_statements(cursor) -> list[str]:
    cursor.execute("SELECT statement FROM pg_prepared_statements")
    return [statement for (statement,) in cursor.fetchall()]


@POSTGRESQL
def test_postgresql_prepares_a_statement_run_six_times_on_a_connection(conversation):
    """The setting in effect: PostgreSQL plans the hot statements once per connection."""
    with transaction.atomic(), connection.cursor() as cursor:
        for _ in range(6):
            selectors.conversation_locked(conversation.pk)
        prepared = _prepared_statements(cursor)

    assert [s for s in prepared if "FROM conversations_conversation WHERE id = $1 FOR" in s] != []


@POSTGRESQL
@TRANSACTIONAL
def test_a_prepared_whole_row_read_still_works_after_a_migration_adds_a_column(conversation):
    """A migration runs on another connection. A prepared `SELECT *` would fail after it
    ("cached plan must not change result type") until its process restarts: the rows
    are read by their columns' names."""

    def read():
        with transaction.atomic():
            return selectors.conversation_locked(conversation.pk)

    for _ in range(10):
        read()
    with connection.cursor() as cursor:
        prepared = _prepared_statements(cursor)
    assert [s for s in prepared if "FROM conversations_conversation WHERE id = $1 FOR" in s]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as migration:
        migration.execute("ALTER TABLE conversations_conversation ADD COLUMN later integer")
        try:
            after = read()
        finally:
            migration.execute("ALTER TABLE conversations_conversation DROP COLUMN later")

    assert (after.pk, after.turn_count) == (conversation.pk, 0)


def test_columns_names_every_concrete_column_in_order():
    assert rows.columns(Turn, "t").split(", ")[:3] == [
        '"t"."id"',
        '"t"."conversation_id"',
        '"t"."number"',
    ]
    assert len(rows.columns(Conversation).split(", ")) == len(Conversation._meta.concrete_fields)


def _whole_turn_sql(extra: str = "") -> str:
    return f"SELECT {rows.columns(Turn)}{extra} FROM conversations_turn WHERE id = %s"  # noqa: S608


def test_select_one_reads_the_instance_raw_reads_with_the_columns_after_as_attributes(
    conversation,
):
    turn = Turn.objects.create(
        conversation=conversation,
        number=1,
        turn_id="t1",
        input="Hi",
        echo={"action": "flagged", "similar_to": 3, "score": 0.95},
        cost_usd=Decimal("0.012500"),
        started_at=timezone.now(),
    )
    sql = _whole_turn_sql(", 41 + 1 AS answer")

    ours = rows.select_one(Turn, sql, [turn.pk])
    theirs = next(iter(Turn.objects.raw(sql, [turn.pk])))

    for field in Turn._meta.concrete_fields:
        assert getattr(ours, field.attname) == getattr(theirs, field.attname), field.name
    assert ours.echo == {"action": "flagged", "similar_to": 3, "score": 0.95}
    assert (ours.answer, ours._state.adding, ours._state.db) == (42, False, "default")


def test_select_one_without_a_row_is_none(conversation):
    assert rows.select_one(Turn, _whole_turn_sql(), [0]) is None


def test_select_one_refuses_a_select_list_that_is_not_the_models(conversation):
    turn = Turn.objects.create(conversation=conversation, number=1, turn_id="t1", input="Hi")

    with pytest.raises(ValueError, match="must start with Turn's columns"):
        rows.select_one(Turn, "SELECT id, number FROM conversations_turn WHERE id = %s", [turn.pk])


@POSTGRESQL
def test_a_generic_plan_of_the_pending_check_still_uses_the_partial_index(conversation):
    """After five runs PostgreSQL may plan a prepared statement once for any parameter;
    the pending statuses are literals in the SQL so that plan can use the index."""
    sql = hot_path_sql.PENDING_STATUSES_SQL.replace("%s", "$1")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"PREPARE pending_check(uuid) AS {sql}")
        cursor.execute(f"EXPLAIN EXECUTE pending_check('{conversation.pk}')")
        plan = "\n".join(line for (line,) in cursor.fetchall())
        cursor.execute("DEALLOCATE pending_check")

    assert "conversations_turn_pending" in plan


def test_insert_all_splits_what_one_statement_cannot_bind(conversation):
    """8,000 steps of 10 columns are 80,000 parameters: more than PostgreSQL takes."""
    turn = Turn.objects.create(conversation=conversation, number=1, turn_id="t1", input="Hi")
    steps = [_step(turn, index) for index in range(1, 8001)]

    with CaptureQueriesContext(connection) as statements:
        rows.insert_all(steps)

    if connection.vendor == "postgresql":
        assert len(statements) == 2
    assert len({step.pk for step in steps}) == 8000
    assert TurnStep.objects.filter(turn=turn).count() == 8000


@POSTGRESQL
@pytest.mark.slow
def test_deleting_a_conversation_of_more_turns_than_a_statement_can_bind(conversation):
    """Django collects the steps of every turn being deleted with one `turn_id IN (…)`
    per batch: batches must stay under the 65,535 parameters bound by the server."""
    Turn.objects.bulk_create(
        Turn(conversation=conversation, number=n, turn_id=f"t{n}", input="Hi")
        for n in range(1, 65_601)
    )

    conversation.delete()

    assert not Turn.objects.filter(conversation_id=conversation.pk).exists()


@POSTGRESQL
def test_in_bulk_of_more_keys_than_a_statement_can_bind(conversation):
    turn = Turn.objects.create(conversation=conversation, number=1, turn_id="t1", input="Hi")

    found = Turn.objects.in_bulk([*range(turn.pk + 1, turn.pk + 70_001), turn.pk])

    assert list(found) == [turn.pk]
