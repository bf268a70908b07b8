"""orchestra_site/asgi.py: every HTTP request goes to Django's WSGI handler on the pool
of threads, which keeps what Django's ASGI handler guarantees (no underscore headers,
chunked bodies read whole); a wait or an event stream leaves its thread and is finished on
the event loop.
"""

import asyncio
import json
import threading
import time

import pytest
from asgiref.testing import ApplicationCommunicator
from django.http import JsonResponse
from django.urls import path

from conversations.models import Turn
from infrastructure.loop_responses import LoopResponse
from orchestra_site.asgi import router as http_app
from orchestra_site.urls import urlpatterns as site_urlpatterns
from orchestra_site.wsgi_threads import WsgiOnThreads
from tests.asgi_helpers import http_scope, send_http_request
from tests.turn_helpers import TRANSACTIONAL

pytest_plugins = ["tests.turn_fixtures"]


# --- through the real application --------------------------------------------------------------


def request(method: str, path: str, headers: list, chunks: list[bytes]) -> tuple[int, dict, bytes]:
    """One HTTP request through the application, the body sent in `chunks`."""
    messages, _ = send_http_request(http_app, http_scope(method, path, headers), chunks)
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def submit_chunked(api_key: str, conversation, payload: dict, first_chunk: int):
    """POST a turn with a chunked body, in two chunks."""
    body = json.dumps(payload).encode()
    headers = [
        (b"authorization", f"Bearer {api_key}".encode()),
        (b"content-type", b"application/json"),
        (b"transfer-encoding", b"chunked"),
    ]
    chunks = [body[:first_chunk], body[first_chunk:]]
    return request("POST", f"/api/v1/conversations/{conversation.pk}/turns/", headers, chunks)


@TRANSACTIONAL
def test_a_chunked_turn_submission_is_read_whole(alice, api_key_for, conversation):
    text = "Where is my parcel? " * 50
    payload = {"text": text, "turn_id": "chunked-1"}

    status, _, answer = submit_chunked(api_key_for(alice), conversation, payload, 300)

    assert (status, json.loads(answer).get("turn_id")) == (202, "chunked-1"), answer
    assert Turn.objects.get(turn_id="chunked-1").input == text


@TRANSACTIONAL
def test_a_chunked_body_larger_than_the_upload_limit_is_refused(
    alice, api_key_for, conversation, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    status, _, answer = submit_chunked(api_key_for(alice), conversation, {"text": "x" * 2000}, 900)

    assert status == 400, answer
    assert json.loads(answer)["error"] == {
        "code": "validation_error",
        "message": "The request body is larger than 1000 bytes.",
        "details": {"body": ["The request body is larger than 1000 bytes."]},
    }
    assert not Turn.objects.exists()


@TRANSACTIONAL
def test_an_underscore_header_cannot_stand_in_for_its_dashed_twin(alice, api_key_for):
    headers = [
        (b"authorization", f"Bearer {api_key_for(alice)}".encode()),
        (b"x_request_id", b"chosen-by-the-client"),
    ]

    status, response_headers, _ = request("GET", "/api/v1/me/", headers, [b""])

    assert status == 200
    assert response_headers["x-request-id"] != "chosen-by-the-client"
    assert len(response_headers["x-request-id"]) == 32


def test_headers_with_an_underscore_never_reach_django(one_thread_app):
    """As Django's ASGI handler does: x_forwarded_proto could pass for x-forwarded-proto."""
    scope = http_scope("GET", "/test/quick/", [(b"x_forwarded_proto", b"https")])

    async def get():
        communicator = ApplicationCommunicator(one_thread_app, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        return await communicator.receive_output(), await communicator.receive_output()

    start, body = asyncio.run(get())
    assert (start["status"], json.loads(body["body"])) == (200, {"forwarded_proto": None})


# --- responses finished on the event loop ------------------------------------------------------

released = threading.Event()
bodies_closed: list[str] = []


def slow_wait(request):
    async def body(response):
        try:
            while not released.is_set():
                await asyncio.sleep(0.01)
            response["X-Waited"] = "yes"
            yield b'{"waited": true}'
        finally:
            bodies_closed.append(request.path)

    return LoopResponse(body, content_type="application/json")


def quick(request):
    return JsonResponse({"forwarded_proto": request.META.get("HTTP_X_FORWARDED_PROTO")})


urlpatterns = [
    path("test/slow-wait/", slow_wait),
    path("test/quick/", quick),
    *site_urlpatterns,
]


@pytest.fixture
def one_thread_app(settings):
    """The server's bridge with a single pool thread, on a urlconf with a wait."""
    settings.ROOT_URLCONF = __name__
    from django.core.wsgi import get_wsgi_application

    released.clear()
    bodies_closed.clear()
    return WsgiOnThreads(get_wsgi_application(), 1, "test")


async def _get(app, path: str, *, until=None) -> list[dict]:
    communicator = ApplicationCommunicator(app, http_scope("GET", path))
    await communicator.send_input({"type": "http.request", "body": b""})
    messages = []
    while True:
        message = await communicator.receive_output(timeout=5)
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            return messages


@pytest.mark.django_db
def test_a_wait_holds_no_thread_while_it_waits(one_thread_app):
    async def scenario():
        waiting = asyncio.ensure_future(_get(one_thread_app, "/test/slow-wait/"))
        await asyncio.sleep(0.2)
        # The pool's only thread answers another request while the first one waits.
        quick_answer = await _get(one_thread_app, "/test/quick/")
        assert not waiting.done()
        released.set()
        return await waiting, quick_answer

    waited, quick_answer = asyncio.run(scenario())

    assert quick_answer[0]["status"] == 200
    start, *body = waited
    assert (start["status"], dict(start["headers"])[b"x-waited"]) == (200, b"yes")
    assert b"".join(m.get("body", b"") for m in body) == b'{"waited": true}'
    assert bodies_closed == ["/test/slow-wait/"]


@pytest.mark.django_db
def test_a_client_that_leaves_stops_the_wait(one_thread_app):
    async def scenario():
        communicator = ApplicationCommunicator(
            one_thread_app, http_scope("GET", "/test/slow-wait/")
        )
        await communicator.send_input({"type": "http.request", "body": b""})
        await asyncio.sleep(0.2)
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(timeout=5)
        return await communicator.receive_nothing(timeout=0.1)

    assert asyncio.run(scenario()) is True  # nothing was sent
    deadline = time.monotonic() + 2
    while not bodies_closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bodies_closed == ["/test/slow-wait/"]
