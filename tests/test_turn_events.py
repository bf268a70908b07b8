"""A turn's events: numbered, buffered, and served as Server-Sent Events
(docs/architecture.md, docs/api.md).

The buffer's interface is async; these tests call it on the process's background loop.
GET …/turns/{n}/events/ is finished on an event loop (a LoopResponse), as the server does.
"""

import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations import payloads
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
from conversations.services import conversation_close, turn_submit
from infrastructure.event_loops import run_sync
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
    """What the buffer's expiry (or a Redis restart) does, now."""
    assert redis_client().delete(*_keys(turn.pk)) >= 1


def epoch_of(turn: Turn) -> str:
    return run_sync(event_buffer().read, turn.pk, 0).epoch


def as_frames(events: list[dict], epoch: str) -> list[dict]:
    return [
        {
            "id": f"{event['seq']}-{epoch}",
            "seq": event["seq"],
            "event": event["type"],
            "data": {**event, "epoch": epoch},
        }
        for event in events
    ]


class Buffer:
    """A buffer implementation, called from the test's thread."""

    def __init__(self, implementation):
        self.implementation = implementation

    def append(self, turn_pk: int, *events: dict, attempt: int = 0, final_turn=None):
        seqs, _epoch, _listened = run_sync(
            self.implementation.append, turn_pk, list(events), attempt, "conversation.x", final_turn
        )
        return seqs

    def read(self, turn_pk: int, after_seq: int) -> list[dict]:
        return run_sync(self.implementation.read, turn_pk, after_seq).events

    def end(self, turn_pk: int) -> StreamEnd | None:
        return run_sync(self.implementation.end, turn_pk)

    def wait_for_end(self, turn_pk: int, timeout: float) -> StreamEnd | None:
        """Follow the stream for its end, as a wait does."""

        async def wait() -> StreamEnd | None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            async with self.implementation.follow(turn_pk, ends_only=True) as follower:
                while True:
                    follower.changed.clear()
                    if end := await self.implementation.end(turn_pk):
                        return end
                    try:
                        await asyncio.wait_for(follower.changed.wait(), deadline - loop.time())
                    except TimeoutError:
                        return None

        return run_sync(wait)


# --- the event buffer ----------------------------------------------------------------------


def test_events_are_numbered_from_one_and_an_ended_stream_takes_no_more(finished_turn):
    events = buffered(finished_turn)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "turn.completed"

    assert publish(turn=finished_turn, event_type="turn.delta", text="late") is None
    assert Buffer(event_buffer()).append(finished_turn.pk, {"type": "turn.reset"}) == [None]
    assert buffered(finished_turn) == events


def test_reading_after_a_seq_returns_only_the_later_events(finished_turn):
    epoch = epoch_of(finished_turn)
    events = [{**event, "epoch": epoch} for event in buffered(finished_turn)]

    assert Buffer(event_buffer()).read(finished_turn.pk, 2) == events[2:]
    assert Buffer(event_buffer()).read(finished_turn.pk, len(events)) == []


@pytest.fixture(params=["redis", "memory"])
def any_buffer(request) -> Buffer:
    """Each implementation of the buffer: Redis (full stack) and memory (embedded)."""
    return Buffer(RedisEventBuffer() if request.param == "redis" else MemoryEventBuffer())


def test_waiting_for_the_end_of_an_ended_stream_answers_at_once(any_buffer):
    any_buffer.append(7, {"type": "turn.accepted"})
    any_buffer.append(7, {"type": "turn.completed"})

    started = time.monotonic()
    assert any_buffer.wait_for_end(7, timeout=10) == StreamEnd(seq=2, turn=None)
    assert time.monotonic() - started < 1


def test_waiting_for_the_end_gives_up_after_the_timeout(any_buffer):
    any_buffer.append(8, {"type": "turn.accepted"})
    any_buffer.append(8, {"type": "turn.delta", "text": "Hello"})

    started = time.monotonic()
    assert any_buffer.wait_for_end(8, timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2


def test_waiting_for_the_end_wakes_when_another_thread_ends_the_stream(any_buffer):
    any_buffer.append(9, {"type": "turn.accepted"})
    ender = threading.Timer(0.2, any_buffer.append, (9, {"type": "turn.failed"}))
    ender.start()

    started = time.monotonic()
    assert any_buffer.wait_for_end(9, timeout=10) == StreamEnd(seq=2, turn=None)
    assert 0.15 <= time.monotonic() - started < 5
    ender.join()


def test_the_end_of_a_stream_carries_the_finished_turn_its_worker_left_there(any_buffer):
    finished = {"id": 10, "status": "completed", "output": "Hello", "usage": {"input_tokens": 3}}
    any_buffer.append(10, {"type": "turn.accepted"})
    any_buffer.append(10, {"type": "turn.delta", "text": "Hello"}, attempt=1, final_turn=finished)

    assert any_buffer.wait_for_end(10, timeout=0.1) is None
    assert any_buffer.append(10, {"type": "turn.completed"}, attempt=1, final_turn=finished) == [3]
    assert any_buffer.wait_for_end(10, timeout=1) == StreamEnd(seq=3, turn=finished)


def test_several_events_go_in_order_and_the_finished_turn_with_the_last(any_buffer):
    finished = {"id": 11, "status": "completed"}
    any_buffer.append(11, {"type": "turn.accepted"})
    events = [{"type": "turn.delta", "text": "Hello"}, {"type": "turn.completed"}]

    assert any_buffer.append(11, *events, attempt=1, final_turn=finished) == [2, 3]
    assert [e["type"] for e in any_buffer.read(11, 0)] == [
        "turn.accepted",
        "turn.delta",
        "turn.completed",
    ]
    assert any_buffer.end(11) == StreamEnd(seq=3, turn=finished)


def test_events_after_the_end_are_refused_with_the_end(any_buffer):
    events = [{"type": "turn.failed"}, {"type": "turn.delta", "text": "late"}]

    assert any_buffer.append(12, *events) == [1, None]
    assert [e["type"] for e in any_buffer.read(12, 0)] == ["turn.failed"]


def test_an_older_attempt_is_refused_once_a_newer_one_appended(any_buffer):
    assert any_buffer.append(13, {"type": "turn.delta", "text": "new"}, attempt=2) == [1]

    assert any_buffer.append(13, {"type": "turn.delta", "text": "stale"}, attempt=1) == [None]
    assert [e.get("text") for e in any_buffer.read(13, 0)] == ["new"]


def test_each_event_carries_its_buffers_epoch_and_a_new_buffer_has_a_new_one(any_buffer):
    any_buffer.append(14, {"type": "turn.accepted"}, {"type": "turn.delta", "text": "a"})
    first = {event["epoch"] for event in any_buffer.read(14, 0)}

    assert len(first) == 1
    if isinstance(any_buffer.implementation, RedisEventBuffer):
        redis_client().delete(*_keys(14))  # what a Redis restart does to the buffer
        any_buffer.append(14, {"type": "turn.reset"})
        [again] = any_buffer.read(14, 0)
        assert (again["seq"], again["epoch"] in first) == (1, False)


def test_text_and_the_event_after_it_are_published_together_in_order(conversation):
    turn = submit(conversation, QUESTION, "msg-1").turn

    published = run_sync(
        publish_events,
        turn=turn,
        events=[("turn.delta", {"text": "Hi"}), ("turn.tool", {"name": "x"})],
    )

    assert [(e["type"], e["seq"]) for e in published] == [("turn.delta", 2), ("turn.tool", 3)]
    assert buffered(turn)[1:] == [
        {key: value for key, value in event.items() if key != "epoch"} for event in published
    ]


def test_of_several_events_none_is_published_after_one_the_stream_refused(finished_turn):
    before = buffered(finished_turn)

    published = run_sync(
        publish_events,
        turn=finished_turn,
        events=[("turn.delta", {"text": "late"}), ("turn.reset", {})],
    )

    assert (published, buffered(finished_turn)) == ([], before)


# --- SSE -------------------------------------------------------------------------------------


def test_the_stream_of_a_finished_turn_is_its_events_then_the_end(finished_turn, alice_key):
    answer = sse_get(events_path(finished_turn), api_key=alice_key)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert answer.headers["Cache-Control"] == "no-cache"
    epoch = epoch_of(finished_turn)
    events = [{**event, "epoch": epoch} for event in buffered(finished_turn)]
    assert answer.body.decode() == "".join(
        f"id: {event['seq']}-{epoch}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
        for event in events
    )
    assert answer.frames()[-1]["event"] == "turn.completed"
    assert answer.frames()[-1]["data"]["output"] == finished_turn.output


def test_last_event_id_resumes_with_the_next_event_exactly(finished_turn, alice_key):
    events, epoch = buffered(finished_turn), epoch_of(finished_turn)

    for last_seen in range(len(events)):
        for last_event_id in (f"{last_seen}-{epoch}", str(last_seen)):
            answer = sse_get(
                events_path(finished_turn), api_key=alice_key, last_event_id=last_event_id
            )

            assert answer.frames() == as_frames(events[last_seen:], epoch), last_event_id


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
        events_path(turn), api_key=key, last_event_id=before_drop[-1]["id"]
    ).frames()

    # then it saw every event of the turn exactly once, in order, up to the end
    turn = wait_for_turn(turn)
    seen = before_drop + after_drop
    assert [frame["seq"] for frame in before_drop] == [1, 2, 3]
    assert seen == as_frames(buffered(turn), epoch_of(turn))
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
        ],
        "db",
    )
    # A client that saw part of the stream gets the text over again after a reset, numbered
    # after what it saw.
    resumed = sse_get(events_path(finished_turn), api_key=alice_key, last_event_id="1-db")
    assert [(frame["id"], frame["event"]) for frame in resumed.frames()] == [
        ("2-db", "turn.reset"),
        ("3-db", "turn.delta"),
        ("4-db", "turn.completed"),
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


@pytest.mark.parametrize(
    "last_event_id", ["abc", "-1", "1.5", "1234567890", "0x10", "1-XYZ", "1-", "-ab12"]
)
def test_an_invalid_last_event_id_is_a_validation_error(finished_turn, alice_key, last_event_id):
    answer = sse_get(events_path(finished_turn), api_key=alice_key, last_event_id=last_event_id)

    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "code": "validation_error",
            "message": "Last-Event-ID must be an id this stream sent.",
            "details": {"Last-Event-ID": ["<seq>-<epoch> or a seq, e.g. 12-3fa9c2d1."]},
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
    assert answer.frames() == as_frames(buffered(finished_turn), epoch_of(finished_turn))


def test_an_unknown_turn_number_is_not_found(finished_turn, alice_key):
    path = f"/api/v1/conversations/{finished_turn.conversation_id}/turns/2/events/"

    assert sse_get(path, api_key=alice_key).status_code == 404


# --- found bugs --------------------------------------------------------------------------------


def test_resuming_after_the_terminal_event_ends_the_stream_at_once(finished_turn, alice_key):
    last = f"{buffered(finished_turn)[-1]['seq']}-{epoch_of(finished_turn)}"

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
        epoch = epoch_of(turn)
        events = [{**event, "epoch": epoch} for event in buffered(turn)]
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
    both = run_sync(
        publish_events, turn=turn, events=[("turn.delta", {"text": "!"}), ("turn.reset", {})]
    )

    assert (event["seq"], [e["seq"] for e in both]) == (2, [3, 4])
    assert [(e["type"], e["seq"]) for e in buffered(turn)] == [
        ("turn.accepted", 1),
        ("turn.delta", 2),
        ("turn.delta", 3),
        ("turn.reset", 4),
    ]


# --- the end of the stream, for the long-poll -------------------------------------------------


def test_a_finished_turns_stream_ends_with_the_turn_as_the_api_shows_it(finished_turn):
    end = Buffer(event_buffer()).end(finished_turn.pk)

    assert end.turn == payloads.turn_payload(Turn.objects.get(pk=finished_turn.pk))
    assert end.turn["status"] == "completed"


def test_a_failed_turns_stream_ends_with_the_failed_turn_as_the_api_shows_it(alice):
    lonely = agent_make("lonely")  # no default agent to fall back on once it is inactive
    conversation = conversation_make(owner=alice, agent=lonely)
    turn = submit(conversation, QUESTION, "msg-1").turn
    lonely.is_active = False
    lonely.save()
    drain_conversation(conversation.pk)

    end = Buffer(event_buffer()).end(turn.pk)

    assert end.turn == payloads.turn_payload(Turn.objects.get(pk=turn.pk))
    assert (end.turn["status"], end.turn["error"]["code"]) == ("failed", "internal")


def test_a_cancelled_turns_stream_ends_without_a_turn_so_the_long_poll_reads_the_row(
    conversation, django_capture_on_commit_callbacks
):
    turn = submit(conversation, QUESTION, "msg-1").turn
    with django_capture_on_commit_callbacks(execute=True):
        conversation_close(conversation=conversation)

    assert Buffer(event_buffer()).end(turn.pk) == StreamEnd(seq=2, turn=None)


# --- resuming across a lost buffer, and Redis failing -------------------------------------------

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens there: every connection is refused


def _rerun_events(turn: Turn) -> None:
    """What a new attempt streams after Redis lost the turn's buffer."""
    run_sync(
        publish_events,
        turn=turn,
        attempt=2,
        events=[("turn.reset", {}), ("turn.delta", {"text": "Again."})],
    )


def test_a_stream_resumed_across_a_lost_buffer_says_so_and_starts_over(finished_turn, alice_key):
    old_epoch = epoch_of(finished_turn)
    forget_buffer(finished_turn)  # Redis restarted
    Turn.objects.filter(pk=finished_turn.pk).update(status=Turn.Status.PROCESSING)
    _rerun_events(finished_turn)
    new_epoch = epoch_of(finished_turn)

    frames = sse_get(
        events_path(finished_turn), api_key=alice_key, last_event_id=f"5-{old_epoch}", max_frames=3
    ).frames()

    assert new_epoch != old_epoch
    assert frames[0]["event"] == "error"
    assert frames[0]["data"]["code"] == "resync_required"
    assert [(frame["id"], frame["event"]) for frame in frames[1:]] == [
        (f"1-{new_epoch}", "turn.reset"),
        (f"2-{new_epoch}", "turn.delta"),
    ]


def test_a_seq_past_the_buffers_end_says_resync_required_too(finished_turn, alice_key):
    forget_buffer(finished_turn)
    Turn.objects.filter(pk=finished_turn.pk).update(status=Turn.Status.PROCESSING)
    _rerun_events(finished_turn)

    frames = sse_get(
        events_path(finished_turn), api_key=alice_key, last_event_id="9", max_frames=2
    ).frames()

    assert [frame["event"] for frame in frames] == ["error", "turn.reset"]
    assert frames[0]["data"]["code"] == "resync_required"


def test_a_resume_from_events_trimmed_away_says_resync_required(finished_turn, alice_key):
    epoch = epoch_of(finished_turn)
    events = buffered(finished_turn)
    assert len(events) == 4
    redis_client().xtrim(_keys(finished_turn.pk)[0], minid="3-0", approximate=False)

    frames = sse_get(
        events_path(finished_turn), api_key=alice_key, last_event_id=f"1-{epoch}"
    ).frames()

    assert frames[0]["data"]["code"] == "resync_required"
    assert [frame["seq"] for frame in frames[1:]] == [3, 4]


def test_a_stream_asked_for_while_redis_refuses_connections_answers_503(
    finished_turn, alice_key, settings
):
    settings.REDIS_URL = DEAD_REDIS

    answer = sse_get(events_path(finished_turn), api_key=alice_key)

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "dependency_unavailable"
