"""Input that used to break the API (found by fuzzing its schema and by hand): each is a
400 `validation_error` that writes nothing, a JSON answer, or bounded work."""

import json

import pytest
from django.test import Client
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from conversations.models import Conversation, Turn
from conversations.mood import SCORED_CHARS, SCORED_EMOJI, _analyzer, _scored_part, sentiment
from tests.factories import user_create
from tests.turn_helpers import agent_make, conversation_make

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/api/v1/conversations/"


@pytest.fixture
def support_agent(db):
    return agent_make("support", is_default=True)


def _post_raw(client, path: str, body: str):
    return client.post(path, data=body, content_type="application/json")


def _validation_error(response, message: str) -> None:
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "validation_error", "message": message, "details": {"body": [message]}}
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"metadata": {"a": "\\u0000"}}', "Text must not contain the NUL character (\\u0000)."),
        ('{"metadata": {"\\u0000": 1}}', "Text must not contain the NUL character (\\u0000)."),
        (
            '{"metadata": {"a": "\\ud800"}}',
            "Text must not contain lone surrogates (\\ud800-\\udfff).",
        ),
        ('{"metadata": {"a": 1e400}}', "Numbers must be finite."),
        ('{"metadata": {"a": [-1e400]}}', "Numbers must be finite."),
    ],
    ids=["nul", "nul-key", "surrogate", "infinity", "minus-infinity"],
)
def test_json_the_database_cannot_store_is_refused_and_nothing_is_written(
    alice_client, support_agent, body, message
):
    response = _post_raw(alice_client, CONVERSATIONS, body)

    _validation_error(response, "JSON parse error - " + message)
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_json_nested_too_deep_is_refused_on_any_endpoint(alice_client, alice, support_agent, depth):
    conversation = conversation_make(owner=alice, agent=support_agent)
    nested = "[" * depth + "]" * depth

    for path, body in [
        (CONVERSATIONS, f'{{"metadata": {{"a": {nested}}}}}'),
        (f"{CONVERSATIONS}{conversation.pk}/turns/", f'{{"text": "hi", "x": {nested}}}'),
        ("/api/v1/shipping/quotes/", f'{{"country": {nested}}}'),
    ]:
        response = _post_raw(alice_client, path, body)
        _validation_error(response, "JSON parse error - JSON nested deeper than 32 levels.")
    assert Conversation.objects.count() == 1
    assert Turn.objects.count() == 0


def test_json_nested_32_levels_is_still_taken(alice_client, support_agent):
    nested = "[" * 30 + "]" * 30  # inside the body and its metadata: 32 levels

    response = _post_raw(alice_client, CONVERSATIONS, f'{{"metadata": {{"a": {nested}}}}}')

    assert response.status_code == 201
    assert Conversation.objects.get().metadata == {"a": json.loads(nested)}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": 123}, "text"),
        ({"text": True}, "text"),
        ({"text": "hi", "turn_id": 7}, "turn_id"),
    ],
)
def test_a_number_is_not_a_string(alice_client, alice, support_agent, body, field):
    conversation = conversation_make(owner=alice, agent=support_agent)

    response = alice_client.post(f"{CONVERSATIONS}{conversation.pk}/turns/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {field: ["Must be a string."]}
    assert Turn.objects.count() == 0


def test_an_agent_slug_must_be_a_string(alice_client, support_agent):
    response = alice_client.post(CONVERSATIONS, {"agent": 5}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"agent": ["Must be a string."]}
    assert Conversation.objects.count() == 0


def test_a_quote_country_must_be_a_string(alice_client):
    body = {"country": 49, "weight_kg": "1", "order_value": "10.00"}

    response = alice_client.post("/api/v1/shipping/quotes/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"country": ["Must be a string."]}


# --- everything under /api/ answers in the error format, CSRF or not ----------------------


@pytest.fixture
def signed_in_browser(alice):
    """A browser with alice's session, whose POSTs carry no CSRF token."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    return browser


def test_a_post_to_an_unknown_api_path_is_a_json_404(signed_in_browser):
    response = signed_in_browser.post("/api/v1/nope/")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "details": {}}
    }


def test_a_post_to_a_turns_event_stream_is_json(
    signed_in_browser, alice_client, alice, support_agent
):
    conversation = conversation_make(owner=alice, agent=support_agent)
    path = reverse("api:turn-events", args=[conversation.pk, 1])

    with_session = signed_in_browser.post(path, data="{}", content_type="x/y")
    with_a_key = alice_client.post(path, data="{}", content_type="x/y")

    assert (with_session.status_code, with_session.json()["error"]["code"]) == (403, "forbidden")
    assert (with_a_key.status_code, with_a_key.json()["error"]["code"]) == (
        405,
        "method_not_allowed",
    )


def test_a_failed_csrf_check_on_an_api_view_is_json(signed_in_browser, alice, support_agent):
    conversation = conversation_make(owner=alice, agent=support_agent)

    response = signed_in_browser.post(
        f"{CONVERSATIONS}{conversation.pk}/turns/", {"text": "hi"}, content_type="application/json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert Turn.objects.count() == 0


def test_a_failed_csrf_check_outside_the_api_is_djangos_page(db):
    user_create("staffer", is_staff=True)
    browser = Client(enforce_csrf_checks=True)

    response = browser.post("/admin/login/", {"username": "staffer", "password": "x"})

    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


# --- the mood scorer's work is bounded -----------------------------------------------------


def test_the_scorer_reads_a_bounded_part_of_any_message():
    scored = _scored_part("😀" * 8000)

    assert len(scored) == SCORED_CHARS
    assert scored.count("😀") == SCORED_EMOJI
    assert scored[SCORED_EMOJI:].strip() == ""


def test_a_message_within_the_bounds_is_scored_as_before():
    text = "This is terrible 😡😡, I am so angry and disappointed! " * 10

    assert len(text) < SCORED_CHARS
    assert _scored_part(text) == text
    assert sentiment(text) == round(_analyzer().polarity_scores(text)["compound"], 4) == -0.9988


def test_a_message_of_8000_emoji_is_taken(alice_client, alice, support_agent):
    conversation = conversation_make(owner=alice, agent=support_agent)

    response = alice_client.post(
        f"{CONVERSATIONS}{conversation.pk}/turns/", {"text": "😀" * 8000}, format="json"
    )

    assert response.status_code == 202
    assert Turn.objects.get().sentiment == 0.9997


# --- the schema says what the API answers ----------------------------------------------------


@pytest.fixture
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _ok_body(schema: dict, path: str, method: str = "get") -> dict:
    return schema["paths"][path][method]["responses"]["200"]["content"]


@pytest.mark.parametrize(
    ("path", "page", "item"),
    [
        (CONVERSATIONS, "ConversationPage", "ConversationOutput"),
        ("/api/v1/conversations/{conversation_id}/turns/", "TurnPage", "TurnOutput"),
    ],
)
def test_lists_are_declared_as_the_pages_they_answer(schema, path, page, item):
    declared = _ok_body(schema, path)["application/json"]["schema"]
    page_schema = schema["components"]["schemas"][page]

    assert declared == {"$ref": f"#/components/schemas/{page}"}
    assert set(page_schema["properties"]) == {"next", "previous", "results"}
    assert page_schema["properties"]["results"]["items"] == {"$ref": f"#/components/schemas/{item}"}
    assert page_schema["properties"]["next"]["nullable"] is True


def test_a_turns_agent_is_declared_nullable(schema):
    agent = schema["components"]["schemas"]["TurnOutput"]["properties"]["agent"]

    assert agent["nullable"] is True


def test_the_event_stream_is_in_the_schema(schema):
    stream = _ok_body(schema, "/api/v1/conversations/{conversation_id}/turns/{number}/events/")

    assert set(stream) == {"text/event-stream"}
    assert stream["text/event-stream"]["schema"]["properties"]["event"]["enum"] == [
        "error",
        "turn.accepted",
        "turn.completed",
        "turn.delta",
        "turn.failed",
        "turn.reset",
        "turn.tool",
    ]
