"""A turn's events: numbered, buffered, and served as Server-Sent Events
(docs/architecture.md, docs/api.md).

GET …/turns/{n}/events/ is an async view; it is requested through Django's AsyncClient.
"""

import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations.events import (
    MemoryEventBuffer,
    RedisEventBuffer,
    StreamEnd,
    _group_members_key,
    _keys,
    event_buffer,
    publish,
    publish_events,
)
from conversations.execution import drain_conversation
from conversations.models import Turn
from conversations.serializers import TurnOutput
from conversations.services import conversation_close, turn_submit
from tests.turn_helpers import (
    TRANSACTIONAL,
    agent_make,
    buffered,
    conversation_make,
    events_path,
    redis_client,
    seqs,
    sse_get,
    submit,
    types_of,
    wait_for_turn,
)

pytest_plugins = ["tests.turn_fixtures"]

QUESTION = "Where is my parcel?"


@pytest.fixture
def alice_key(alice, api_key_for) -> str:
    return api_key_for(alice, name="sse")


@pytest.fixture
def finished_turn(conversation) -> Turn:
    """A completed turn whose events are in its buffer."""
    turn = submit(conversation, QUESTION, "msg-1").turn
    assert drain_conversation(conversation.pk) == 1
    turn.refresh_from_db()
    assert turn.status == Turn.Status.COMPLETED
    return turn


def forget_buffer(turn: Turn) -> None:
    """What the buffer's expiry does, now."""
    assert redis_client().delete(*_keys(turn.pk)) >= 1


def as_frames(events: list[dict]) -> list[dict]:
    return [{"id": event["seq"], "event": event["type"], "data": event} for event in events]


# --- the event buffer ----------------------------------------------------------------------


def test_events_are_numbered_from_one_and_an_ended_stream_takes_no_more(finished_turn):
    events = buffered(finished_turn)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "turn.completed"

    assert publish(turn=finished_turn, event_type="turn.delta", text="late") is None
    assert event_buffer().append(finished_turn.pk, {"type": "turn.reset"}) is None
    assert buffered(finished_turn) == events


def test_reading_after_a_seq_returns_only_the_later_events(finished_turn):
    events = buffered(finished_turn)

    assert event_buffer().read(finished_turn.pk, 2) == events[2:]
    assert event_buffer().read(finished_turn.pk, len(events)) == []


@pytest.fixture(params=["redis", "memory"])
def any_buffer(request):
    """Each implementation of the buffer: Redis (full stack) and memory (embedded)."""
    return RedisEventBuffer() if request.param == "redis" else MemoryEventBuffer()


def test_waiting_for_the_end_of_an_ended_stream_answers_at_once(any_buffer):
    any_buffer.append(7, {"type": "turn.accepted"})
    any_buffer.append(7, {"type": "turn.completed"})

    started = time.monotonic()
    assert any_buffer.wait_until_ended(7, timeout_s=10) == StreamEnd(turn=None)
    assert time.monotonic() - started < 1


def test_waiting_for_the_end_gives_up_after_the_timeout(any_buffer):
    any_buffer.append(8, {"type": "turn.accepted"})
    any_buffer.append(8, {"type": "turn.delta", "text": "Hello"})

    started = time.monotonic()
    assert any_buffer.wait_until_ended(8, timeout_s=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2


def test_waiting_for_the_end_wakes_when_another_thread_ends_the_stream(any_buffer):
    any_buffer.append(9, {"type": "turn.accepted"})
    ender = threading.Timer(0.2, any_buffer.append, (9, {"type": "turn.failed"}))
    ender.start()

    started = time.monotonic()
    assert any_buffer.wait_until_ended(9, timeout_s=10) == StreamEnd(turn=None)
    assert 0.15 <= time.monotonic() - started < 5
    ender.join()


def test_the_end_of_a_stream_carries_the_finished_turn_its_worker_left_there(any_buffer):
    finished = {"id": 10, "status": "completed", "output": "Hello", "usage": {"input_tokens": 3}}
    any_buffer.append(10, {"type": "turn.accepted"})
    any_buffer.append(10, {"type": "turn.delta", "text": "Hello"}, 1, finished)  # not the end

    assert any_buffer.wait_until_ended(10, timeout_s=0.1) is None
    assert any_buffer.append(10, {"type": "turn.completed"}, 1, finished) == 3
    assert any_buffer.wait_until_ended(10, timeout_s=1) == StreamEnd(turn=finished)


def test_several_events_go_in_order_and_the_finished_turn_with_the_last(any_buffer):
    finished = {"id": 11, "status": "completed"}
    any_buffer.append(11, {"type": "turn.accepted"})
    events = [{"type": "turn.delta", "text": "Hello"}, {"type": "turn.completed"}]

    assert any_buffer.append_for_group(11, events, 1, "conversation.x", finished)[0] == [2, 3]
    assert [e["type"] for e in any_buffer.read(11, 0)] == [
        "turn.accepted",
        "turn.delta",
        "turn.completed",
    ]
    assert any_buffer.wait_until_ended(11, timeout_s=1) == StreamEnd(turn=finished)


def test_events_after_the_end_are_refused_with_the_end(any_buffer):
    events = [{"type": "turn.failed"}, {"type": "turn.delta", "text": "late"}]

    assert any_buffer.append_for_group(12, events, 0, "conversation.x")[0] == [1, None]
    assert [e["type"] for e in any_buffer.read(12, 0)] == ["turn.failed"]


def test_text_and_the_event_after_it_are_published_together_in_order(conversation):
    turn = submit(conversation, QUESTION, "msg-1").turn

    published = publish_events(
        turn=turn, events=[("turn.delta", {"text": "Hi"}), ("turn.tool", {"name": "x"})]
    )

    assert [(e["type"], e["seq"]) for e in published] == [("turn.delta", 2), ("turn.tool", 3)]
    assert buffered(turn)[1:] == published


def test_of_several_events_none_is_published_after_one_the_stream_refused(finished_turn):
    before = buffered(finished_turn)

    published = publish_events(
        turn=finished_turn, events=[("turn.delta", {"text": "late"}), ("turn.reset", {})]
    )

    assert (published, buffered(finished_turn)) == ([], before)


# --- SSE -------------------------------------------------------------------------------------


def test_the_stream_of_a_finished_turn_is_its_events_then_the_end(finished_turn, alice_key):
    answer = sse_get(events_path(finished_turn), api_key=alice_key)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert answer.headers["Cache-Control"] == "no-cache"
    events = buffered(finished_turn)
    assert answer.body.decode() == "".join(
        f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
        for event in events
    )
    assert answer.frames()[-1]["event"] == "turn.completed"
    assert answer.frames()[-1]["data"]["output"] == finished_turn.output


def test_last_event_id_resumes_with_the_next_event_exactly(finished_turn, alice_key):
    events = buffered(finished_turn)

    for last_seen in range(len(events)):
        answer = sse_get(
            events_path(finished_turn), api_key=alice_key, last_event_id=str(last_seen)
        )

        assert answer.frames() == as_frames(events[last_seen:]), last_seen


@TRANSACTIONAL
def test_a_live_stream_resumed_after_a_dropped_connection_loses_and_repeats_nothing(
    alice, api_key_for, conversation, threads_executor, settings, local_model_delay
):
    # given a turn being streamed word by word
    local_model_delay(25)
    settings.TURN_DELTA_COALESCE_MS = 0
    key = api_key_for(alice)
    turn = turn_submit(conversation_id=conversation.pk, text=QUESTION, turn_id="msg-1").turn

    # when the client reads three events, loses the connection, and reconnects
    before_drop = sse_get(events_path(turn), api_key=key, max_frames=3).frames()
    assert Turn.objects.get(pk=turn.pk).status in Turn.PENDING
    after_drop = sse_get(
        events_path(turn), api_key=key, last_event_id=str(before_drop[-1]["id"])
    ).frames()

    # then it saw every event of the turn exactly once, in order, up to the end
    turn = wait_for_turn(turn)
    seen = before_drop + after_drop
    assert [frame["id"] for frame in before_drop] == [1, 2, 3]
    assert seen == as_frames(buffered(turn))
    assert seen[-1]["event"] == "turn.completed"
    assert "".join(f["data"]["text"] for f in seen if f["event"] == "turn.delta") == turn.output


def test_a_finished_turn_whose_buffer_expired_is_replayed_from_the_database(
    finished_turn, alice_key
):
    forget_buffer(finished_turn)
    base = {
        "conversation": str(finished_turn.conversation_id),
        "turn_id": "msg-1",
        "number": 1,
    }

    answer = sse_get(events_path(finished_turn), api_key=alice_key)

    assert answer.status_code == 200
    assert answer.frames() == as_frames(
        [
            {**base, "type": "turn.accepted", "replayed": False, "seq": 1},
            {**base, "type": "turn.delta", "text": finished_turn.output, "seq": 2},
            {
                **base,
                "type": "turn.completed",
                "status": "completed",
                "output": finished_turn.output,
                "usage": finished_turn.usage,
                "cost_usd": "0.000000",
                "echo": None,
                "seq": 3,
            },
        ]
    )
    # A client that saw part of the stream gets the text over again after a reset, numbered
    # after what it saw.
    resumed = sse_get(events_path(finished_turn), api_key=alice_key, last_event_id="1")
    assert [(frame["id"], frame["event"]) for frame in resumed.frames()] == [
        (2, "turn.reset"),
        (3, "turn.delta"),
        (4, "turn.completed"),
    ]


def test_a_cancelled_turn_whose_buffer_expired_is_replayed_as_cancelled(
    conversation, alice_key, django_capture_on_commit_callbacks
):
    turn = submit(conversation, QUESTION, "msg-1").turn
    with django_capture_on_commit_callbacks(execute=True):
        conversation_close(conversation=conversation)
    forget_buffer(turn)

    frames = sse_get(events_path(turn), api_key=alice_key).frames()

    assert [frame["event"] for frame in frames] == ["turn.accepted", "turn.failed"]
    assert frames[-1]["data"]["status"] == "cancelled"
    assert frames[-1]["data"]["error"] == {
        "code": "cancelled",
        "message": "The conversation was closed.",
    }


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "1234567890", "0x10"])
def test_an_invalid_last_event_id_is_a_validation_error(finished_turn, alice_key, last_event_id):
    answer = sse_get(events_path(finished_turn), api_key=alice_key, last_event_id=last_event_id)

    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "code": "validation_error",
            "message": "Last-Event-ID must be a non-negative integer.",
            "details": {"Last-Event-ID": ["A non-negative integer."]},
        }
    }


@pytest.mark.parametrize("api_key", [None, "orc_not-a-real-key"])
def test_the_stream_needs_credentials(finished_turn, api_key):
    answer = sse_get(events_path(finished_turn), api_key=api_key)

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "not_authenticated"
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_another_users_stream_is_not_found(finished_turn, bob, api_key_for):
    answer = sse_get(events_path(finished_turn), api_key=api_key_for(bob))

    assert answer.status_code == 404
    assert answer.json() == {"error": {"code": "not_found", "message": "Not found.", "details": {}}}


def test_staff_with_the_view_permission_may_follow_a_stream(finished_turn, staff_user, api_key_for):
    answer = sse_get(events_path(finished_turn), api_key=api_key_for(staff_user))

    assert answer.status_code == 200
    assert answer.frames() == as_frames(buffered(finished_turn))


def test_an_unknown_turn_number_is_not_found(finished_turn, alice_key):
    path = f"/api/v1/conversations/{finished_turn.conversation_id}/turns/2/events/"

    assert sse_get(path, api_key=alice_key).status_code == 404


# --- found bugs --------------------------------------------------------------------------------


def test_resuming_after_the_terminal_event_ends_the_stream_at_once(finished_turn, alice_key):
    last = str(buffered(finished_turn)[-1]["seq"])

    answer = sse_get(events_path(finished_turn), api_key=alice_key, last_event_id=last, timeout=3)

    assert (answer.status_code, answer.frames()) == (200, [])


def test_resuming_from_an_expired_buffer_still_delivers_the_end_of_the_turn(
    conversation, alice_key, settings
):
    settings.TURN_DELTA_COALESCE_MS = 0  # one delta per word: many events
    turn = submit(conversation, QUESTION, "msg-1").turn
    drain_conversation(conversation.pk)
    turn.refresh_from_db()
    assert len(buffered(turn)) > 10
    forget_buffer(turn)

    frames = sse_get(events_path(turn), api_key=alice_key, last_event_id="10").frames()

    assert frames != []
    assert frames[-1]["event"] == "turn.completed"
    assert frames[-1]["data"]["output"] == turn.output


def test_a_replayed_completion_carries_the_turns_cost(finished_turn, alice_key):
    Turn.objects.filter(pk=finished_turn.pk).update(cost_usd="0.012345")
    forget_buffer(finished_turn)

    frames = sse_get(events_path(finished_turn), api_key=alice_key).frames()

    assert frames[-1]["data"]["cost_usd"] == "0.012345"


def test_the_replayed_completion_of_an_echo_shows_the_public_echo_only(finished_turn, alice_key):
    echo = {"action": "regenerated", "similar_to": 1, "score": 1.0, "first_output": "secret"}
    Turn.objects.filter(pk=finished_turn.pk).update(echo=echo)
    forget_buffer(finished_turn)

    frames = sse_get(events_path(finished_turn), api_key=alice_key).frames()

    assert types_of([f["data"] for f in frames]) == [
        "turn.accepted",
        "turn.delta",
        "turn.completed",
    ]
    assert frames[-1]["data"]["echo"] == {"action": "regenerated", "similar_to": 1, "score": 1.0}


# --- the conversation's channel-layer group ------------------------------------------------


async def _receive(layer, channel: str, count: int) -> list[dict]:
    return [await asyncio.wait_for(layer.receive(channel), timeout=5) for _ in range(count)]


def test_a_member_of_the_conversations_group_receives_every_event_in_order(conversation):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(conversation.group_name, channel)
    try:
        turn = submit(conversation, QUESTION, "msg-1").turn
        drain_conversation(conversation.pk)
        events = buffered(turn)
        received = async_to_sync(_receive)(layer, channel, len(events))
    finally:
        async_to_sync(layer.group_discard)(conversation.group_name, channel)

    assert types_of(events)[0] == "turn.accepted" and types_of(events)[-1] == "turn.completed"
    assert received == [{"type": "turn.event", "event": event} for event in events]


def test_publishing_goes_on_after_redis_loses_its_scripts(conversation):
    turn = submit(conversation, QUESTION, "msg-1").turn
    assert seqs(buffered(turn)) == [1]
    assert _group_members_key(conversation.group_name) is not None  # the pipelined path
    redis_client().script_flush()

    event = publish(turn=turn, event_type="turn.delta", text="Hello")
    redis_client().script_flush()
    both = publish_events(turn=turn, events=[("turn.delta", {"text": "!"}), ("turn.reset", {})])

    assert (event["seq"], [e["seq"] for e in both]) == (2, [3, 4])
    assert [(e["type"], e["seq"]) for e in buffered(turn)] == [
        ("turn.accepted", 1),
        ("turn.delta", 2),
        ("turn.delta", 3),
        ("turn.reset", 4),
    ]


# --- the end of the stream, for the long-poll -------------------------------------------------


def test_a_finished_turns_stream_ends_with_the_turn_as_the_api_shows_it(finished_turn):
    end = event_buffer().wait_until_ended(finished_turn.pk, timeout_s=1)

    assert end.turn == TurnOutput(Turn.objects.get(pk=finished_turn.pk)).data
    assert end.turn["status"] == "completed"


def test_a_failed_turns_stream_ends_with_the_failed_turn_as_the_api_shows_it(alice):
    lonely = agent_make("lonely")  # no default agent to fall back on once it is inactive
    conversation = conversation_make(owner=alice, agent=lonely)
    turn = submit(conversation, QUESTION, "msg-1").turn
    lonely.is_active = False
    lonely.save()
    drain_conversation(conversation.pk)

    end = event_buffer().wait_until_ended(turn.pk, timeout_s=1)

    assert end.turn == TurnOutput(Turn.objects.get(pk=turn.pk)).data
    assert (end.turn["status"], end.turn["error"]["code"]) == ("failed", "internal")


def test_a_cancelled_turns_stream_ends_without_a_turn_so_the_long_poll_reads_the_row(
    conversation, django_capture_on_commit_callbacks
):
    turn = submit(conversation, QUESTION, "msg-1").turn
    with django_capture_on_commit_callbacks(execute=True):
        conversation_close(conversation=conversation)

    assert event_buffer().wait_until_ended(turn.pk, timeout_s=1) == StreamEnd(turn=None)
