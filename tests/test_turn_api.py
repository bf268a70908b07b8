"""REST API of conversations and turns (docs/api.md)."""

import threading
import time
import uuid

import pytest
from django.db import connection
from rest_framework.serializers import ModelSerializer

from agents.models import Agent
from conversations.events import _keys
from conversations.models import Conversation, Turn
from conversations.serializers import TurnOutput
from conversations.services import turn_claim_next
from tests.asgi_helpers import ApiTestClient
from tests.turn_helpers import (
    SUPPORT_PROMPT,
    TRANSACTIONAL,
    agent_make,
    buffered,
    conversation_make,
    events_path,
    footprint,
    local_model_reply,
    redis_client,
    sse_get,
    submit,
    types_of,
)

pytest_plugins = ["tests.turn_fixtures"]

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/api/v1/conversations/"
CONVERSATION_KEYS = {
    "id",
    "status",
    "agent",
    "turn_count",
    "cost_usd",
    "metadata",
    "created_at",
    "updated_at",
}
TURN_KEYS = {
    "id",
    "conversation",
    "number",
    "turn_id",
    "status",
    "input",
    "output",
    "agent",
    "intent",
    "error",
    "usage",
    "cost_usd",
    "echo",
    "created_at",
    "started_at",
    "completed_at",
    "latency_ms",
    "ttft_ms",
}
NOT_FOUND = {"error": {"code": "not_found", "message": "Not found.", "details": {}}}
QUESTION = "Where is my parcel?"


def conversation_url(conversation, suffix: str = "") -> str:
    return f"{CONVERSATIONS}{conversation.pk}/{suffix}"


def turns_url(conversation) -> str:
    return conversation_url(conversation, "turns/")


def turn_url(conversation, number: int) -> str:
    return conversation_url(conversation, f"turns/{number}/")


# --- conversations ---------------------------------------------------------------------------


def test_starting_a_conversation_with_the_default_agent(alice, alice_client, support_agent):
    response = alice_client.post(CONVERSATIONS, {}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == CONVERSATION_KEYS
    conversation = Conversation.objects.get()
    assert body["id"] == str(conversation.pk)
    assert (body["status"], body["agent"], body["turn_count"], body["cost_usd"]) == (
        "active",
        "support",
        0,
        "0.000000",
    )
    assert body["metadata"] == {}
    assert (conversation.owner, conversation.agent) == (alice, support_agent)


def test_starting_a_conversation_with_a_named_agent_and_metadata(alice_client, support_agent):
    agent_make("sales", name="Sales")

    response = alice_client.post(
        CONVERSATIONS, {"agent": "sales", "metadata": {"order": "A-1"}}, format="json"
    )

    assert response.status_code == 201
    assert (response.json()["agent"], response.json()["metadata"]) == ("sales", {"order": "A-1"})


@pytest.mark.parametrize("slug", ["nope", "retired"])
def test_an_unknown_or_inactive_agent_is_a_validation_error_naming_agent(
    alice_client, support_agent, slug
):
    agent_make("retired", is_active=False)

    response = alice_client.post(CONVERSATIONS, {"agent": slug}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "No active agent with this slug.",
            "details": {"agent": [f"Unknown: {slug}"]},
        }
    }
    assert Conversation.objects.count() == 0


def test_the_list_is_cursor_paginated_newest_first_and_holds_only_own_conversations(
    alice, bob, alice_client, support_agent
):
    mine = [conversation_make(owner=alice, agent=support_agent) for _ in range(51)]
    conversation_make(owner=bob, agent=support_agent)

    first = alice_client.get(CONVERSATIONS).json()
    assert set(first) == {"next", "previous", "results"}
    assert first["previous"] is None
    assert [c["id"] for c in first["results"]] == [str(c.pk) for c in reversed(mine)][:50]
    second = alice_client.get(first["next"]).json()
    assert [c["id"] for c in second["results"]] == [str(mine[0].pk)]
    assert second["next"] is None
    assert second["previous"] is not None


def test_staff_with_the_view_permission_list_every_conversation(
    alice, bob, staff_client, support_agent
):
    conversations = [conversation_make(owner=user, agent=support_agent) for user in (alice, bob)]

    results = staff_client.get(CONVERSATIONS).json()["results"]

    assert {c["id"] for c in results} == {str(c.pk) for c in conversations}


def test_the_conversation_shows_its_turn_count_and_cost(alice_client, conversation):
    submit(conversation, "one", "a")
    submit(conversation, "two", "b")
    Turn.objects.filter(number=1).update(cost_usd="0.001500")
    Turn.objects.filter(number=2).update(cost_usd="0.000250")

    body = alice_client.get(conversation_url(conversation)).json()

    assert (body["turn_count"], body["cost_usd"]) == (2, "0.001750")


def test_requests_without_credentials_are_refused(api_client, conversation):
    response = api_client.get(CONVERSATIONS)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


# --- who may see and do what -----------------------------------------------------------------


OTHER_USERS_REQUESTS = [
    ("get", ""),
    ("get", "turns/"),
    ("post", "turns/"),
    ("get", "turns/1/"),
    ("get", "turns/1/?wait=1"),
    ("post", "close/"),
]


@pytest.mark.parametrize(("method", "suffix"), OTHER_USERS_REQUESTS)
def test_another_users_conversation_is_not_found_and_left_alone(
    bob_client, conversation, method, suffix, django_capture_on_commit_callbacks
):
    # given alice's conversation with a queued turn
    submit(conversation, QUESTION, "msg-1")
    before = footprint()

    # when bob asks for it or tries to change it
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = getattr(bob_client, method)(
            conversation_url(conversation, suffix),
            {"text": "mine now", "turn_id": "bob-1"} if method == "post" else None,
            format="json",
        )

    # then it does not exist for him, and nothing happened
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert callbacks == []
    assert footprint() == before
    conversation.refresh_from_db()
    assert (conversation.status, conversation.turn_count) == (Conversation.Status.ACTIVE, 1)
    assert list(Turn.objects.values_list("turn_id", "status")) == [("msg-1", "queued")]


def test_another_users_turn_events_are_not_found(bob, api_key_for, conversation):
    turn = submit(conversation, QUESTION, "msg-1").turn

    answer = sse_get(events_path(turn), api_key=api_key_for(bob))

    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND


def test_staff_with_the_view_permission_see_but_cannot_submit_or_close(
    staff_client, conversation, django_capture_on_commit_callbacks
):
    submit(conversation, QUESTION, "msg-1")
    before = footprint()

    assert staff_client.get(conversation_url(conversation)).status_code == 200
    assert staff_client.get(turns_url(conversation)).status_code == 200
    assert staff_client.get(turn_url(conversation, 1)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        submitted = staff_client.post(turns_url(conversation), {"text": "hi"}, format="json")
        closed = staff_client.post(conversation_url(conversation, "close/"), format="json")

    assert (submitted.status_code, submitted.json()) == (404, NOT_FOUND)
    # Closing is a change: staff who may only view are told so (docs/api.md: forbidden).
    assert closed.status_code == 403
    assert closed.json()["error"]["code"] == "forbidden"
    assert callbacks == []
    assert footprint() == before
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ACTIVE


@pytest.mark.parametrize(("method", "suffix"), [*OTHER_USERS_REQUESTS, ("get", "turns/1/events/")])
def test_an_unknown_conversation_is_not_found(alice_client, support_agent, method, suffix):
    missing = Conversation(id=uuid.uuid4())

    response = getattr(alice_client, method)(
        conversation_url(missing, suffix),
        {"text": QUESTION} if method == "post" else None,
        format="json",
    )

    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert Turn.objects.count() == 0


# --- submitting turns ------------------------------------------------------------------------


def test_a_new_turn_is_accepted_with_202_and_its_location(
    alice_client, conversation, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            turns_url(conversation), {"text": QUESTION, "turn_id": "msg-1"}, format="json"
        )

    assert response.status_code == 202
    assert response["Location"] == turn_url(conversation, 1)
    assert "Idempotent-Replayed" not in response
    body = response.json()
    assert set(body) == TURN_KEYS
    turn = Turn.objects.get()
    assert body["id"] == turn.pk
    assert body["conversation"] == str(conversation.pk)
    assert {key: body[key] for key in TURN_KEYS - {"id", "conversation", "created_at"}} == {
        "number": 1,
        "turn_id": "msg-1",
        "status": "queued",
        "input": QUESTION,
        "output": "",
        "agent": None,
        "intent": "",
        "error": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "cost_usd": "0.000000",
        "echo": None,
        "started_at": None,
        "completed_at": None,
        "latency_ms": None,
        "ttft_ms": None,
    }
    # and it was announced and handed to the workers
    assert types_of(buffered(turn)) == ["turn.accepted"]
    assert footprint().enqueued == 1


def test_a_replay_answers_200_with_the_existing_turn_and_does_nothing(
    alice_client, conversation, django_capture_on_commit_callbacks
):
    payload = {"text": QUESTION, "turn_id": "msg-1"}
    with django_capture_on_commit_callbacks(execute=True):
        first = alice_client.post(turns_url(conversation), payload, format="json")
    before = footprint()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again = alice_client.post(
            turns_url(conversation),
            {"text": " where IS my parcel? ", "turn_id": "msg-1"},
            format="json",
        )

    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again["Location"] == turn_url(conversation, 1)
    assert again.json() == first.json()
    assert callbacks == []
    assert footprint() == before
    assert types_of(buffered(Turn.objects.get())) == ["turn.accepted"]


def test_the_idempotency_key_header_is_the_turn_id(alice_client, conversation):
    first = alice_client.post(
        turns_url(conversation), {"text": QUESTION}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )
    again = alice_client.post(
        turns_url(conversation), {"text": QUESTION}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )
    both = alice_client.post(
        turns_url(conversation),
        {"text": QUESTION, "turn_id": "key-1"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="key-1",
    )

    assert (first.status_code, first.json()["turn_id"]) == (202, "key-1")
    assert (again.status_code, again["Idempotent-Replayed"]) == (200, "true")
    assert (both.status_code, both.json()["id"]) == (200, first.json()["id"])
    assert Turn.objects.count() == 1


def test_a_header_and_body_turn_id_that_differ_are_refused(alice_client, conversation):
    response = alice_client.post(
        turns_url(conversation),
        {"text": QUESTION, "turn_id": "body-1"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="header-1",
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "turn_id and the Idempotency-Key header differ.",
            "details": {"turn_id": ["Must equal the Idempotency-Key header when both are sent."]},
        }
    }
    assert Turn.objects.count() == 0


def test_an_invalid_idempotency_key_header_is_refused(alice_client, conversation):
    response = alice_client.post(
        turns_url(conversation), {"text": QUESTION}, format="json", HTTP_IDEMPOTENCY_KEY="bad id"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert list(response.json()["error"]["details"]) == ["Idempotency-Key"]
    assert Turn.objects.count() == 0


def test_a_reused_turn_id_with_another_text_is_422(alice_client, conversation):
    alice_client.post(turns_url(conversation), {"text": QUESTION, "turn_id": "m"}, format="json")

    response = alice_client.post(
        turns_url(conversation), {"text": "Cancel my order.", "turn_id": "m"}, format="json"
    )

    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "idempotency_mismatch",
            "message": "This turn_id was already used with a different text.",
            "details": {},
        }
    }
    assert list(Turn.objects.values_list("input", flat=True)) == [QUESTION]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": " \n\t "}, "text"),
        ({"text": "x" * 8001}, "text"),
        ({"text": QUESTION, "turn_id": "bad id"}, "turn_id"),
        ({"text": QUESTION, "turn_id": "a" * 65}, "turn_id"),
        ({"text": QUESTION, "turn_id": ""}, "turn_id"),
        ({"text": QUESTION, "turn_id": "ünïcode"}, "turn_id"),
    ],
    ids=[
        "no-text",
        "empty-text",
        "whitespace-text",
        "8001-chars",
        "turn-id-with-space",
        "turn-id-65-chars",
        "empty-turn-id",
        "non-ascii-turn-id",
    ],
)
def test_bad_input_is_a_validation_error_naming_the_field(
    alice_client, conversation, payload, field, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_client.post(turns_url(conversation), payload, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert list(error["details"]) == [field]
    assert callbacks == []
    assert footprint().turns == 0
    assert footprint().event_keys == frozenset()


def test_the_longest_text_and_turn_id_are_accepted(alice_client, conversation):
    response = alice_client.post(
        turns_url(conversation),
        {"text": "x" * 8000, "turn_id": "A-z_9" * 12 + "abcd"},
        format="json",
    )

    assert response.status_code == 202
    assert response.json()["turn_id"] == "A-z_9" * 12 + "abcd"


def test_a_reject_agent_answers_409_conversation_busy(alice, alice_client):
    agent = agent_make("strict", double_text=Agent.DoubleText.REJECT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    alice_client.post(turns_url(conversation), {"text": "one"}, format="json")

    response = alice_client.post(turns_url(conversation), {"text": "two"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conversation_busy"
    assert Turn.objects.count() == 1


@pytest.mark.parametrize(
    "status",
    [
        Conversation.Status.HANDED_OFF,
        Conversation.Status.RESOLVED,
        Conversation.Status.ESCALATED,
        Conversation.Status.CLOSED,
    ],
)
def test_a_conversation_that_is_not_active_answers_409_conversation_closed(
    alice, alice_client, support_agent, status
):
    conversation = conversation_make(owner=alice, agent=support_agent, status=status)

    response = alice_client.post(turns_url(conversation), {"text": QUESTION}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conversation_closed"
    assert Turn.objects.count() == 0


# --- reading turns ---------------------------------------------------------------------------


def test_the_turns_are_listed_by_number(alice_client, conversation):
    for turn_id in ("c", "a", "b"):
        submit(conversation, f"text {turn_id}", turn_id)

    body = alice_client.get(turns_url(conversation)).json()

    assert set(body) == {"next", "previous", "results"}
    assert [(t["number"], t["turn_id"]) for t in body["results"]] == [(1, "c"), (2, "a"), (3, "b")]


def test_an_unknown_turn_number_is_not_found(alice_client, conversation):
    submit(conversation, QUESTION, "a")

    response = alice_client.get(turn_url(conversation, 2))

    assert (response.status_code, response.json()) == (404, NOT_FOUND)


@pytest.mark.parametrize("wait", ["61", "-1", "soon", "1.5"])
def test_wait_must_be_a_whole_number_of_seconds_up_to_60(alice_client, conversation, wait):
    submit(conversation, QUESTION, "a")

    response = alice_client.get(turn_url(conversation, 1), {"wait": wait})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], list(error["details"])) == ("validation_error", ["wait"])


def test_wait_on_a_finished_turn_answers_at_once(alice_client, conversation):
    submit(conversation, QUESTION, "a")
    turn_claim_next(conversation_id=conversation.pk)
    Turn.objects.update(status=Turn.Status.COMPLETED, output="Done.")

    started = time.monotonic()
    response = alice_client.get(turn_url(conversation, 1), {"wait": 60})

    assert time.monotonic() - started < 1
    assert (response.json()["status"], response.json()["output"]) == ("completed", "Done.")


@TRANSACTIONAL
def test_wait_long_polls_until_the_turn_is_done(
    alice_client, conversation, threads_executor, local_model_delay
):
    # given a worker that takes about a second to answer
    local_model_delay(20)
    submitted = alice_client.post(turns_url(conversation), {"text": QUESTION}, format="json")
    assert Turn.objects.get().status in Turn.PENDING

    # when the client waits for it
    response = alice_client.get(submitted["Location"], {"wait": 5})

    # then it gets the finished turn
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["agent"], body["intent"]) == (
        "completed",
        "support",
        "conversation_agent",
    )
    assert body["output"] == local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))
    # as the worker left it at the end of the stream, which is what the database says
    assert body == alice_client.get(submitted["Location"]).json()
    assert body == TurnOutput(Turn.objects.get()).data


@TRANSACTIONAL
def test_wait_ends_with_a_turn_the_database_says_is_done_though_its_stream_never_ended(
    alice_client, conversation
):
    # given a turn whose end was committed but never reached its event stream
    submit(conversation, QUESTION, "a")
    turn = turn_claim_next(conversation_id=conversation.pk)

    def end_in_the_database_only():
        Turn.objects.filter(pk=turn.pk).update(status=Turn.Status.COMPLETED, output="Done.")
        connection.close()  # this thread's own connection

    finish = threading.Timer(0.5, end_in_the_database_only)
    finish.start()

    # when a client waits for it
    started = time.monotonic()
    response = alice_client.get(turn_url(conversation, 1), {"wait": 30})

    # then the database's answer ends the wait within a few seconds
    finish.join()
    assert (response.json()["status"], response.json()["output"]) == ("completed", "Done.")
    assert time.monotonic() - started < 10


# --- Prefer: wait (one request for a submission and its answer) -------------------------------


@TRANSACTIONAL
def test_prefer_wait_answers_the_submission_with_the_finished_turn(
    alice_client, conversation, threads_executor, local_model_delay
):
    # given a worker that takes about a second to answer
    local_model_delay(20)

    # when the client submits and prefers to wait for the answer
    response = alice_client.post(
        turns_url(conversation),
        {"text": QUESTION, "turn_id": "msg-1"},
        format="json",
        HTTP_PREFER="wait=10",
    )

    # then the one response is the new turn, finished, as a long-poll would show it
    assert response.status_code == 202
    assert response["Preference-Applied"] == "wait=10"
    assert response["Location"] == turn_url(conversation, 1)
    body = response.json()
    assert (body["number"], body["status"], body["agent"]) == (1, "completed", "support")
    assert body["output"] == local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))
    assert body == alice_client.get(turn_url(conversation, 1)).json()


@TRANSACTIONAL
def test_a_replay_that_prefers_to_wait_answers_with_the_finished_turn(
    alice_client, conversation, threads_executor, local_model_delay
):
    local_model_delay(20)
    payload = {"text": QUESTION, "turn_id": "msg-1"}
    first = alice_client.post(turns_url(conversation), payload, format="json")
    assert first.json()["status"] == "queued"

    again = alice_client.post(
        turns_url(conversation), payload, format="json", HTTP_PREFER="wait=10"
    )

    assert again.status_code == 200
    assert (again["Idempotent-Replayed"], again["Preference-Applied"]) == ("true", "wait=10")
    assert again.json()["status"] == "completed"
    assert Turn.objects.count() == 1


@TRANSACTIONAL
def test_prefer_wait_is_capped_at_60_seconds_and_other_preferences_are_ignored(
    alice_client, conversation, threads_executor
):
    response = alice_client.post(
        turns_url(conversation),
        {"text": QUESTION},
        format="json",
        HTTP_PREFER='respond-async, return=minimal, wait="600"; unit=s, wait=1',
    )

    assert (response.status_code, response["Preference-Applied"]) == (202, "wait=60")
    assert response.json()["status"] == "completed"


@TRANSACTIONAL
def test_a_submission_whose_turn_redis_cannot_follow_waits_on_the_database(
    alice_client, conversation, log_output
):
    # given that Redis cannot be asked about the next turn's end (its key holds another type)
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('conversations_turn', 'id'))")
        next_pk = cursor.fetchone()[0] + 1
    redis_client().set(_keys(next_pk)[4], "not a stream")

    response = alice_client.post(
        turns_url(conversation),
        {"text": QUESTION, "turn_id": "msg-1"},
        format="json",
        HTTP_PREFER="wait=1",
    )

    # then it waited all the same, on the database (no worker ran the turn meanwhile)
    assert (response.status_code, response.json()["status"]) == (202, "queued")
    assert response.json()["id"] == Turn.objects.get().pk == next_pk
    assert response["Preference-Applied"] == "wait=1"
    assert [line["turn"] for line in log_output.events("turn.wait_without_redis")] == [next_pk]
    assert footprint().enqueued == 1


def test_without_a_wait_preference_the_submission_answers_at_once(
    alice_client, conversation, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            turns_url(conversation),
            {"text": QUESTION},
            format="json",
            HTTP_PREFER="respond-async",
        )

    assert (response.status_code, response.json()["status"]) == (202, "queued")
    assert "Preference-Applied" not in response
    assert footprint().enqueued == 1


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=1.5", "wait=-1", "wait=", "wait"])
def test_a_wait_preference_that_is_not_whole_seconds_is_refused_and_nothing_recorded(
    alice_client, conversation, prefer, django_capture_on_commit_callbacks
):
    before = footprint()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_client.post(
            turns_url(conversation), {"text": QUESTION}, format="json", HTTP_PREFER=prefer
        )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], list(error["details"])) == ("validation_error", ["Prefer"])
    assert (Turn.objects.count(), callbacks, footprint()) == (0, [], before)


# --- closing ---------------------------------------------------------------------------------


def test_closing_a_conversation_ends_it_for_good(
    alice_client, conversation, django_capture_on_commit_callbacks
):
    queued = submit(conversation, QUESTION, "a").turn

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(conversation_url(conversation, "close/"), format="json")

    assert response.status_code == 200
    assert set(response.json()) == CONVERSATION_KEYS
    assert response.json()["status"] == "closed"
    queued.refresh_from_db()
    assert (queued.status, queued.error_code) == (Turn.Status.CANCELLED, "cancelled")
    before = footprint()

    later = alice_client.post(turns_url(conversation), {"text": "Hello?"}, format="json")

    assert later.status_code == 409
    assert later.json() == {
        "error": {
            "code": "conversation_closed",
            "message": "This conversation is closed.",
            "details": {},
        }
    }
    assert footprint() == before


def test_an_operator_may_close_anyones_conversation(operator, api_key_for, conversation):
    client = ApiTestClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(operator)}")

    response = client.post(conversation_url(conversation, "close/"), format="json")

    assert (response.status_code, response.json()["status"]) == (200, "closed")


# --- agents ------------------------------------------------------------------------------------


def test_the_agents_list_shows_active_agents_only(alice_client, support_agent):
    agent_make("billing-help", name="Billing help", description="Invoices and refunds.")
    agent_make("retired", name="Retired", is_active=False)

    response = alice_client.get("/api/v1/agents/")

    assert response.status_code == 200
    assert response.json() == [
        {"slug": "billing-help", "name": "Billing help", "description": "Invoices and refunds."},
        {
            "slug": "support",
            "name": "Customer support",
            "description": "Answers questions about orders.",
        },
    ]


def test_the_hand_built_turn_rendering_is_drf_s_rendering_of_the_declared_fields(conversation):
    # given turns in every shape a client can meet
    queued = submit(conversation, "Where is my parcel?", "a").turn
    completed = submit(conversation, "Do you ship to Norway?", "b").turn
    failed = submit(conversation, "And to Iceland?", "c").turn
    Turn.objects.filter(pk=completed.pk).update(
        status=Turn.Status.COMPLETED,
        agent=conversation.agent,
        intent="rule:norway",
        output="Yes, in 3 to 5 days.",
        input_tokens=12,
        output_tokens=7,
        cost_usd="0.000123",
        echo={"action": "flagged", "similar_to": 1, "score": 0.93, "first_output": "x"},
        started_at=completed.created_at,
        completed_at=completed.created_at,
        latency_ms=41,
        ttft_ms=9,
    )
    Turn.objects.filter(pk=failed.pk).update(
        status=Turn.Status.FAILED, error_code="provider_unavailable", error_message="Try later."
    )

    for turn in Turn.objects.filter(pk__in=[queued.pk, completed.pk, failed.pk]):
        # then the fast rendering equals DRF's field-by-field one
        assert TurnOutput(turn).data == ModelSerializer.to_representation(TurnOutput(), turn)
