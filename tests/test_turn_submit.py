"""Turn submission (docs/architecture.md, turn engine): numbering, idempotency, double texts, closed
conversations. Service level; the after-commit work runs as a real commit would run it."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent
from conversations.events import _keys
from conversations.execution import drain_conversation
from conversations.models import Conversation, Turn, text_digest
from conversations.services import conversation_close, turn_claim_next, turn_submit
from infrastructure.api_errors import STATUS_BY_CODE
from infrastructure.errors import ConversationBusy, ConversationClosed, IdempotencyMismatch
from tests.turn_helpers import (
    agent_make,
    buffered,
    conversation_make,
    footprint,
    submit,
    types_of,
)

pytest_plugins = ["tests.turn_fixtures"]

QUESTION = "Where is my parcel?"


def accepted_event(turn: Turn) -> dict:
    return {
        "type": "turn.accepted",
        "conversation": str(turn.conversation_id),
        "turn_id": turn.turn_id,
        "number": turn.number,
        "replayed": False,
        "seq": 1,
    }


def test_turns_are_numbered_from_one_in_submission_order(conversation):
    turns = [submit(conversation, f"message {i}", f"m-{i}").turn for i in range(1, 6)]

    assert [t.number for t in turns] == [1, 2, 3, 4, 5]
    assert list(
        Turn.objects.filter(conversation=conversation).values_list("number", "turn_id", "status")
    ) == [(n, f"m-{n}", Turn.Status.QUEUED) for n in range(1, 6)]
    conversation.refresh_from_db()
    assert conversation.turn_count == 5


def test_numbers_are_per_conversation(alice, support_agent, conversation):
    other = conversation_make(owner=alice, agent=support_agent)

    submit(conversation, "one", "a")
    submit(conversation, "two", "b")
    first_of_other = submit(other, "one", "a").turn

    assert first_of_other.number == 1


def test_a_new_turn_is_recorded_hashed_and_announced(conversation):
    submission = submit(conversation, "  Where is MY parcel? ", "msg-1")

    turn = Turn.objects.get(pk=submission.turn.pk)
    assert submission.replayed is False
    assert (turn.input, turn.input_hash, turn.status, turn.attempt) == (
        "  Where is MY parcel? ",
        text_digest("where is my parcel?"),
        Turn.Status.QUEUED,
        0,
    )
    assert buffered(turn) == [accepted_event(turn)]
    events_key, seq_key, _ended, _attempt, _done, epoch_key = _keys(turn.pk)
    assert footprint().event_keys == {events_key.encode(), seq_key.encode(), epoch_key.encode()}
    assert footprint().enqueued == 1


def test_without_a_turn_id_each_submission_gets_a_fresh_one(conversation):
    first = submit(conversation, QUESTION).turn
    second = submit(conversation, QUESTION).turn

    assert first.turn_id != second.turn_id
    assert all(len(t.turn_id) == 32 and int(t.turn_id, 16) >= 0 for t in (first, second))
    assert (first.number, second.number) == (1, 2)


def test_only_a_client_chosen_turn_id_is_looked_up_before_the_insert(conversation):
    def turn_reads(turn_id):
        with CaptureQueriesContext(connection) as queries:
            turn_submit(conversation_id=conversation.pk, text=QUESTION, turn_id=turn_id)
        return [
            q["sql"]
            for q in queries
            if q["sql"].startswith("SELECT") and "conversations_turn" in q["sql"].split("WHERE")[0]
        ]

    assert len(turn_reads("client-chosen")) == 1
    assert turn_reads(None) == []  # a fresh id, which no earlier submission can have


@pytest.mark.parametrize(
    "same_text",
    [QUESTION, "where is my parcel?", "  WHERE   is my\tparcel?\n", "\uff37here is my parcel?"],
    ids=["identical", "other-case", "other-whitespace", "full-width"],
)
def test_a_replay_returns_the_existing_turn_and_does_nothing_else(
    conversation, same_text, django_capture_on_commit_callbacks
):
    # given a submitted turn, announced and enqueued
    original = submit(conversation, QUESTION, "msg-1").turn
    before = footprint()

    # when the client sends the same turn_id with the same (normalized) text again
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        replay = turn_submit(conversation_id=conversation.pk, text=same_text, turn_id="msg-1")

    # then it gets the existing turn back, flagged as a replay
    assert replay.replayed is True
    assert replay.turn.pk == original.pk
    assert replay.turn.input == QUESTION
    # and nothing was recorded, announced or enqueued
    assert callbacks == []
    assert footprint() == before
    assert types_of(buffered(original)) == ["turn.accepted"]
    assert Turn.objects.count() == 1
    conversation.refresh_from_db()
    assert conversation.turn_count == 1


def test_a_reused_turn_id_with_another_text_is_an_idempotency_mismatch(
    conversation, django_capture_on_commit_callbacks
):
    original = submit(conversation, QUESTION, "msg-1").turn
    before = footprint()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(IdempotencyMismatch),
    ):
        turn_submit(conversation_id=conversation.pk, text="Cancel my order.", turn_id="msg-1")

    assert callbacks == []
    assert footprint() == before
    assert Turn.objects.get().input == QUESTION
    assert types_of(buffered(original)) == ["turn.accepted"]


def test_a_turn_id_is_scoped_to_its_conversation(alice, support_agent, conversation):
    other = conversation_make(owner=alice, agent=support_agent)
    submit(conversation, QUESTION, "msg-1")

    in_other = submit(other, "Another text entirely.", "msg-1")

    assert in_other.replayed is False
    assert Turn.objects.filter(turn_id="msg-1").count() == 2


# --- double texts: enqueue, reject, interrupt -------------------------------------------------


def test_enqueue_strategy_queues_a_turn_behind_a_pending_one(conversation):
    assert conversation.agent.double_text == Agent.DoubleText.ENQUEUE
    submit(conversation, "first", "a")

    second = submit(conversation, "second", "b").turn

    assert list(Turn.objects.values_list("number", "status")) == [
        (1, Turn.Status.QUEUED),
        (2, Turn.Status.QUEUED),
    ]
    assert second.number == 2


@pytest.mark.parametrize("pending_status", [Turn.Status.QUEUED, Turn.Status.PROCESSING])
def test_reject_strategy_refuses_a_turn_while_another_is_pending(
    alice, pending_status, django_capture_on_commit_callbacks
):
    # given a conversation whose agent rejects double texts, with a queued or running turn
    agent = agent_make("strict", double_text=Agent.DoubleText.REJECT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    pending = submit(conversation, "first", "a").turn
    if pending_status == Turn.Status.PROCESSING:
        assert turn_claim_next(conversation_id=conversation.pk).pk == pending.pk
    before = footprint()

    # when another message arrives
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(ConversationBusy),
    ):
        turn_submit(conversation_id=conversation.pk, text="second", turn_id="b")

    # then it is refused and nothing happened
    assert callbacks == []
    assert footprint() == before
    assert list(Turn.objects.values_list("number", "status")) == [(1, pending_status)]
    conversation.refresh_from_db()
    assert conversation.turn_count == 1


def test_reject_strategy_takes_the_next_turn_once_the_previous_one_ended(alice):
    agent = agent_make("strict", double_text=Agent.DoubleText.REJECT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    submit(conversation, "first", "a")
    drain_conversation(conversation.pk)

    second = submit(conversation, "second", "b")

    assert second.replayed is False
    assert second.turn.number == 2


def test_reject_strategy_still_answers_a_replay_of_the_pending_turn(alice):
    agent = agent_make("strict", double_text=Agent.DoubleText.REJECT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    pending = submit(conversation, "first", "a").turn

    replay = submit(conversation, "first", "a")

    assert (replay.replayed, replay.turn.pk) == (True, pending.pk)


def test_interrupt_strategy_cancels_the_queued_turn_and_runs_the_new_one(alice):
    # given a conversation whose agent interrupts, with a queued turn
    agent = agent_make("impatient", double_text=Agent.DoubleText.INTERRUPT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    interrupted = submit(conversation, "first", "a").turn

    # when another message arrives
    newer = submit(conversation, "second", "b").turn

    # then the queued turn is cancelled and its stream ended with a cancellation
    interrupted.refresh_from_db()
    assert (interrupted.status, interrupted.error_code, interrupted.error_message) == (
        Turn.Status.CANCELLED,
        "cancelled",
        "Interrupted by a newer message.",
    )
    assert interrupted.completed_at is not None
    events = buffered(interrupted)
    assert types_of(events) == ["turn.accepted", "turn.failed"]
    assert events[-1]["error"] == {
        "code": "cancelled",
        "message": "Interrupted by a newer message.",
    }
    assert events[-1]["status"] == Turn.Status.CANCELLED
    # and the new turn runs; the cancelled one does not
    assert drain_conversation(conversation.pk) == 1
    newer.refresh_from_db()
    interrupted.refresh_from_db()
    assert newer.status == Turn.Status.COMPLETED
    assert (interrupted.status, interrupted.output) == (Turn.Status.CANCELLED, "")
    assert types_of(buffered(interrupted)) == ["turn.accepted", "turn.failed"]


def test_interrupt_strategy_cancels_a_running_turn(alice):
    agent = agent_make("impatient", double_text=Agent.DoubleText.INTERRUPT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    running = submit(conversation, "first", "a").turn
    turn_claim_next(conversation_id=conversation.pk)

    submit(conversation, "second", "b")

    running.refresh_from_db()
    assert (running.status, running.error_code, running.lease_expires_at) == (
        Turn.Status.CANCELLED,
        "cancelled",
        None,
    )
    assert buffered(running)[-1]["error"]["code"] == "cancelled"


# --- conversations that take no turns ----------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        Conversation.Status.HANDED_OFF,
        Conversation.Status.RESOLVED,
        Conversation.Status.ESCALATED,
        Conversation.Status.CLOSED,
    ],
)
def test_a_conversation_that_is_not_active_takes_no_turn(
    alice, support_agent, status, django_capture_on_commit_callbacks
):
    conversation = conversation_make(owner=alice, agent=support_agent, status=status)
    before = footprint()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(ConversationClosed) as raised,
    ):
        turn_submit(conversation_id=conversation.pk, text=QUESTION, turn_id="msg-1")

    assert raised.value.code == "conversation_closed"
    assert STATUS_BY_CODE[raised.value.code] == 409
    assert callbacks == []
    assert footprint() == before
    assert before.turns == 0
    conversation.refresh_from_db()
    assert (conversation.status, conversation.turn_count) == (status, 0)


def test_closing_a_conversation_cancels_its_pending_turns(
    conversation, django_capture_on_commit_callbacks
):
    queued = submit(conversation, "first", "a").turn

    with django_capture_on_commit_callbacks(execute=True):
        closed = conversation_close(conversation=conversation)

    queued.refresh_from_db()
    assert closed.status == Conversation.Status.CLOSED
    assert (queued.status, queued.error_code, queued.error_message) == (
        Turn.Status.CANCELLED,
        "cancelled",
        "The conversation was closed.",
    )
    assert types_of(buffered(queued)) == ["turn.accepted", "turn.failed"]
    with pytest.raises(ConversationClosed):
        turn_submit(conversation_id=conversation.pk, text="second", turn_id="b")
