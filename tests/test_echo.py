"""Anti-echo: a reply that repeats a recent reply is flagged or regenerated
(docs/architecture.md)."""

import pytest

from agents.models import Agent
from conversations.echo import find_echo, similarity
from conversations.execution import drain_conversation
from conversations.models import Turn
from conversations.selectors import recent_replies
from tests.turn_helpers import (
    SUPPORT_PROMPT,
    agent_make,
    buffered,
    conversation_make,
    delta_text,
    local_model_reply,
    seqs,
    submit,
    types_of,
    words,
)

pytest_plugins = ["tests.turn_fixtures"]

QUESTION = "Where is my parcel?"


# --- similarity: Jaccard similarity of word 3-shingles ----------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("the parcel left the warehouse today", "the parcel left the warehouse today", 1.0),
        ("the parcel left the warehouse", "refunds take five working days", 0.0),
        # {abc, bcd} vs {abc, bce}: 1 shared of 3
        ("a b c d", "a b c e", 1 / 3),
        # {one two three, two three four, three four five} vs {…, three four six}: 2 of 4
        ("one two three four five", "one two three four six", 0.5),
        # same words, another order: another answer
        ("a b c", "c b a", 0.0),
        # case, width and spacing do not count
        ("Hello   THERE  world", "hello there WORLD", 1.0),
        # shorter than a shingle: the whole text is the one shingle
        ("yes", "YES", 1.0),
        ("yes", "yes please", 0.0),
        ("", "", 0.0),
        ("", "anything at all", 0.0),
    ],
)
def test_similarity(a, b, expected):
    assert similarity(a, b) == expected
    assert similarity(b, a) == expected


# --- policies, run by the worker's own code in this thread ----------------------------------


def _two_identical_questions(alice, *, anti_echo: str) -> tuple[Turn, Turn]:
    agent = agent_make("echo-" + anti_echo, anti_echo=anti_echo, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    first = submit(conversation, QUESTION, "q-1").turn
    second = submit(conversation, QUESTION, "q-2").turn
    assert drain_conversation(conversation.pk) == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Turn.Status.COMPLETED, Turn.Status.COMPLETED)
    return first, second


def test_with_anti_echo_off_a_repeated_reply_is_kept_and_not_recorded(alice):
    first, second = _two_identical_questions(alice, anti_echo=Agent.AntiEcho.OFF)

    assert (
        second.output
        == first.output
        == local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))
    )
    assert second.echo is None
    assert second.public_echo is None
    assert buffered(second)[-1]["echo"] is None


def test_flag_keeps_the_repeated_reply_and_records_the_match(alice):
    first, second = _two_identical_questions(alice, anti_echo=Agent.AntiEcho.FLAG)

    assert second.output == first.output
    assert second.echo == {"action": "flagged", "similar_to": 1, "score": 1.0}
    events = buffered(second)
    types = types_of(events)
    assert (types[0], set(types[1:-1]), types[-1]) == (
        "turn.accepted",
        {"turn.delta"},
        "turn.completed",
    )
    assert events[-1]["echo"] == {"action": "flagged", "similar_to": 1, "score": 1.0}
    assert delta_text(events) == second.output
    assert second.output_tokens == words(second.output)


def test_regenerate_replaces_the_repeated_reply_after_a_reset(alice):
    first, second = _two_identical_questions(alice, anti_echo=Agent.AntiEcho.REGENERATE)

    # then the kept reply is another one, and the first attempt is kept for the admin
    assert second.output != first.output
    assert second.echo["first_output"] == first.output
    assert second.public_echo == {"action": "regenerated", "similar_to": 1, "score": 1.0}
    assert second.echo["regenerated_score"] is None
    # and both streams went out, separated by a reset, never concatenated
    events = buffered(second)
    assert seqs(events) == list(range(1, len(events) + 1))
    reset_at = types_of(events).index("turn.reset")
    assert types_of(events).count("turn.reset") == 1
    assert delta_text(events[:reset_at]) == first.output
    assert delta_text(events[reset_at:]) == second.output
    assert events[-1]["type"] == "turn.completed"
    assert events[-1]["output"] == second.output
    assert events[-1]["echo"] == {"action": "regenerated", "similar_to": 1, "score": 1.0}
    # and the usage is that of both model calls
    assert second.output_tokens == words(first.output) + words(second.output)


def test_a_different_question_is_no_echo(alice):
    agent = agent_make("flagging", anti_echo=Agent.AntiEcho.FLAG, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    submit(conversation, QUESTION, "q-1")
    second = submit(conversation, "Can I pay by invoice?", "q-2").turn

    drain_conversation(conversation.pk)

    second.refresh_from_db()
    assert second.status == Turn.Status.COMPLETED
    assert second.echo is None


def test_find_echo_looks_only_at_the_last_window_of_completed_replies(alice, support_agent):
    conversation = conversation_make(owner=alice, agent=support_agent)
    for number in range(1, 4):
        submit(conversation, f"question {number}", f"q-{number}")
    drain_conversation(conversation.pk)
    replies = dict(Turn.objects.filter(conversation=conversation).values_list("number", "output"))

    def echo_of(output, window):
        recent = recent_replies(conversation_id=conversation.pk, before_number=4, limit=window)
        return find_echo(
            replies=[(number, reply, digest) for number, _, reply, digest in recent],
            output=output,
            threshold=1.0,
        )

    assert echo_of(replies[1], window=3).similar_to == 1
    assert echo_of(replies[1], window=3).score == 1.0
    assert echo_of(replies[1], window=2) is None
    assert echo_of(replies[3], window=1).similar_to == 3
