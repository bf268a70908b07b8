"""Submissions under concurrency (docs/architecture.md, turn engine): real threads, each
with its own connection to the real PostgreSQL, turns executed by the embedded worker threads."""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from conversations.models import Turn
from conversations.services import turn_submit
from tests.turn_helpers import (
    TRANSACTIONAL,
    buffered,
    delta_text,
    seqs,
    types_of,
    wait_for_turn,
    wait_until,
)

pytest_plugins = ["tests.turn_fixtures"]

pytestmark = TRANSACTIONAL


def _submit_closing_connection(conversation_id, text: str, turn_id: str) -> tuple[int, bool]:
    try:
        submission = turn_submit(conversation_id=conversation_id, text=text, turn_id=turn_id)
        return submission.turn.pk, submission.replayed
    finally:
        connection.close()


def test_fifty_concurrent_submissions_of_one_turn_id_make_one_turn_run_once(
    threads_executor, conversation
):
    # given 50 clients retrying the same message at the same moment
    callers = 50
    start = threading.Barrier(callers)

    def client(_) -> tuple[int, bool]:
        start.wait(timeout=30)
        return _submit_closing_connection(conversation.pk, "Where is it?", "retry-1")

    # when they all submit
    with ThreadPoolExecutor(max_workers=callers) as pool:
        answers = list(pool.map(client, range(callers), timeout=60))

    # then there is one turn, every caller got it, and only one of them created it
    [turn] = Turn.objects.filter(conversation=conversation)
    assert sorted(answers) == [(turn.pk, False)] + [(turn.pk, True)] * (callers - 1)
    # and it ran exactly once
    turn = wait_for_turn(turn, Turn.Status.COMPLETED)
    assert turn.attempt == 1
    events = buffered(turn)
    assert types_of(events).count("turn.accepted") == 1
    assert types_of(events).count("turn.completed") == 1
    assert types_of(events)[-1] == "turn.completed"
    assert delta_text(events) == turn.output
    conversation.refresh_from_db()
    assert conversation.turn_count == 1


def test_two_hundred_concurrent_submissions_are_numbered_without_gaps_and_run_in_order(
    threads_executor, conversation
):
    # given 200 different messages sent to one conversation at once (40 at a time)
    count = 200
    texts = {f"msg-{i}": f"Message number {i}" for i in range(count)}
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(
            pool.map(
                lambda turn_id: _submit_closing_connection(
                    conversation.pk, texts[turn_id], turn_id
                ),
                texts,
            )
        )

    # then each got a new turn, numbered 1..200 with no gap and no duplicate
    assert [replayed for _, replayed in answers] == [False] * count
    assert len({pk for pk, _ in answers}) == count
    numbers = list(
        Turn.objects.filter(conversation=conversation)
        .order_by("number")
        .values_list("number", flat=True)
    )
    assert numbers == list(range(1, count + 1))
    conversation.refresh_from_db()
    assert conversation.turn_count == count

    # and all of them ran, once each, strictly one after the other in number order
    wait_until(
        lambda: (
            not Turn.objects.filter(conversation=conversation)
            .exclude(status=Turn.Status.COMPLETED)
            .exists()
        ),
        timeout=90,
        interval=0.1,
        what="all 200 turns to complete",
    )
    turns = [wait_for_turn(turn) for turn in Turn.objects.filter(conversation=conversation)]
    turns.sort(key=lambda turn: turn.number)
    assert {(turn.status, turn.attempt) for turn in turns} == {(Turn.Status.COMPLETED, 1)}
    assert {turn.turn_id: turn.input for turn in turns} == texts
    for earlier, later in itertools.pairwise(turns):
        assert earlier.completed_at <= later.started_at, (earlier.number, later.number)
    for turn in turns:
        events = buffered(turn)
        assert types_of(events)[0] == "turn.accepted"
        assert types_of(events)[-1] == "turn.completed"
        assert types_of(events).count("turn.completed") == 1
        assert seqs(events) == list(range(1, len(events) + 1))
