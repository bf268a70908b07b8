"""The customer's mood (issue 4 "Mood"): a lexicon-based sentiment per input (VADER, no
network), a moving average per conversation, and escalation to a human when the mood stays
below the agent's threshold for N turns in a row."""

import pytest

from agents.runtime import SINK_MESSAGES
from conversations.execution import drain_conversation
from conversations.models import Conversation, Turn
from conversations.mood import MOOD_WEIGHT, next_mood, sentiment
from conversations.services import turn_claim_next
from tests.turn_helpers import (
    SUPPORT_PROMPT,
    buffered,
    delta_text,
    expire_lease,
    local_model_reply,
    submit,
)

pytest_plugins = ["tests.turn_fixtures"]

FURIOUS = "This is terrible, I hate this awful service. Worst shop ever!"  # -0.9402
DISGUSTED = "This is horrible and useless, I am furious and disgusted."  # -0.9246
BAD = "This is bad."  # -0.5423
UNHAPPY = "I am unhappy with the delay."  # -0.6249
NEUTRAL = "Where is my parcel?"  # 0.0
DELIGHTED = "Thank you so much, this is great, I love it!"  # 0.902


def run_turn(conversation, text: str) -> Turn:
    turn = submit(conversation, text).turn
    drain_conversation(conversation.pk)
    turn.refresh_from_db()
    conversation.refresh_from_db()
    return turn


@pytest.fixture
def escalating_agent(support_agent):
    support_agent.escalate_mood_below = -0.3
    support_agent.escalate_after_turns = 2
    support_agent.save()
    return support_agent


def test_sentiment_has_the_sign_of_the_text():
    assert sentiment(FURIOUS) < -0.5
    assert sentiment(DELIGHTED) > 0.5
    assert sentiment(NEUTRAL) == 0.0
    assert -1.0 <= sentiment(FURIOUS) <= 1.0
    assert sentiment(FURIOUS) == -0.9402  # rounded to 4 places, deterministic


def test_next_mood_is_a_moving_average_weighted_towards_the_newest_message():
    assert MOOD_WEIGHT == 0.5
    assert next_mood(None, -0.8) == -0.8
    assert next_mood(-0.8, 0.4) == -0.2
    assert next_mood(-0.2, 0.0) == -0.1
    assert next_mood(0.1, 0.12345) == 0.1117  # 0.111725, rounded to 4 places


def test_each_turn_scores_its_input_and_the_conversation_mood_follows_the_average(
    conversation,
):
    assert conversation.mood is None
    expected = None
    for text in (DELIGHTED, BAD, NEUTRAL):
        turn = run_turn(conversation, text)
        expected = next_mood(expected, sentiment(text))
        assert turn.status == Turn.Status.COMPLETED
        assert turn.sentiment == sentiment(text)
        assert conversation.mood == expected
        assert conversation.low_mood_turns == 0  # the agent sets no threshold
    # 0.902, then (0.902 - 0.5423) / 2 = 0.1799, then 0.1799 / 2 = 0.09 (rounded)
    assert conversation.mood == next_mood(next_mood(0.902, -0.5423), 0.0) == 0.09


def test_two_very_negative_messages_escalate_the_conversation(conversation, escalating_agent):
    first = run_turn(conversation, FURIOUS)

    assert first.status == Turn.Status.COMPLETED
    assert first.intent == "conversation_agent"
    assert first.output == local_model_reply(("system", SUPPORT_PROMPT), ("user", FURIOUS))
    assert conversation.status == Conversation.Status.ACTIVE
    assert (conversation.mood, conversation.low_mood_turns) == (-0.9402, 1)

    second = run_turn(conversation, DISGUSTED)

    assert second.status == Turn.Status.COMPLETED
    assert second.intent == "mood_escalation"
    assert second.agent == escalating_agent
    assert second.output == SINK_MESSAGES["escalated"]
    assert delta_text(buffered(second)) == SINK_MESSAGES["escalated"]
    assert conversation.status == Conversation.Status.ESCALATED
    assert (conversation.mood, conversation.low_mood_turns) == (next_mood(-0.9402, -0.9246), 2)
    assert second.usage == {"input_tokens": 0, "output_tokens": 0}  # no model was asked


def test_a_neutral_message_that_lifts_the_mood_resets_the_streak(conversation, escalating_agent):
    moods = []
    for text in (BAD, NEUTRAL, BAD):
        turn = run_turn(conversation, text)
        assert turn.intent == "conversation_agent"
        moods.append((conversation.mood, conversation.low_mood_turns))

    assert moods == [
        (-0.5423, 1),
        (next_mood(-0.5423, 0.0), 0),  # -0.2712: above the threshold, the streak ends
        (next_mood(next_mood(-0.5423, 0.0), -0.5423), 1),
    ]
    assert conversation.status == Conversation.Status.ACTIVE

    # One more negative message makes two in a row: now it escalates.
    turn = run_turn(conversation, UNHAPPY)
    assert turn.intent == "mood_escalation"
    assert conversation.low_mood_turns == 2
    assert conversation.status == Conversation.Status.ESCALATED


def test_after_a_very_negative_message_one_neutral_message_keeps_the_mood_low(
    conversation, escalating_agent
):
    """The threshold applies to the moving mood, not to each message: after -0.94, a
    neutral message only lifts the mood to -0.47, still below -0.3, so the streak goes on
    and the neutral turn escalates. (Documented behaviour; see the report.)"""
    run_turn(conversation, FURIOUS)
    turn = run_turn(conversation, NEUTRAL)

    assert turn.sentiment == 0.0
    assert conversation.mood == next_mood(-0.9402, 0.0) == -0.4701
    assert conversation.low_mood_turns == 2
    assert turn.intent == "mood_escalation"
    assert conversation.status == Conversation.Status.ESCALATED


def test_mood_is_counted_once_per_turn_even_when_it_runs_again(conversation, escalating_agent):
    # given a turn whose first worker was lost while running it
    turn = submit(conversation, FURIOUS).turn
    assert turn_claim_next(conversation_id=conversation.pk).attempt == 1
    expire_lease(turn)

    # when it runs again
    drain_conversation(conversation.pk)

    turn.refresh_from_db()
    conversation.refresh_from_db()
    assert (turn.status, turn.attempt) == (Turn.Status.COMPLETED, 2)
    assert (conversation.mood, conversation.low_mood_turns) == (-0.9402, 1)


def test_mood_follows_the_messages_in_the_order_they_were_submitted(conversation, escalating_agent):
    """Scored when submitted: two angry messages sent before the bot answered the first
    already make a streak, so the second turn goes to a human and nothing is asked twice."""
    first = submit(conversation, FURIOUS).turn
    second = submit(conversation, DISGUSTED).turn
    conversation.refresh_from_db()
    assert (first.sentiment, second.sentiment) == (-0.9402, -0.9246)
    assert (conversation.mood, conversation.low_mood_turns) == (next_mood(-0.9402, -0.9246), 2)
    assert (first.intent, second.intent) == ("", "mood_escalation")

    drain_conversation(conversation.pk)

    first.refresh_from_db()
    second.refresh_from_db()
    conversation.refresh_from_db()
    assert (first.status, first.intent) == (Turn.Status.COMPLETED, "conversation_agent")
    assert (second.status, second.output) == (Turn.Status.COMPLETED, SINK_MESSAGES["escalated"])
    assert conversation.status == Conversation.Status.ESCALATED
