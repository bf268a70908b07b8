"""orchestra_site/asgi.py: which handler serves each HTTP request, and what the WSGI path
must keep of Django's ASGI handler (no underscore headers) or add (chunked bodies read).

Async views (the SSE stream) go to Django's ASGI handler, so they stream from the event
loop; long-polls to a thread pool of their own; every other request to the main pool.
"""

import json

import pytest
from asgiref.sync import async_to_sync

from conversations.models import Turn
from orchestra_site.asgi import HttpBySyncOrAsyncView, http_app
from tests.asgi_helpers import http_scope, send_http_request
from tests.turn_helpers import TRANSACTIONAL

pytest_plugins = ["tests.turn_fixtures"]

CONVERSATION = "/api/v1/conversations/2b1b7f3e-3d3c-4c1e-9a55-0d4c8f1f7a10"


class Recording:
    def __init__(self, name: str, seen: list):
        self.name, self.seen = name, seen

    async def __call__(self, scope, receive, send):
        self.seen.append((self.name, scope))


def dispatch(path: str, query: bytes = b"", headers=(), root_path: str = "") -> tuple:
    seen: list = []
    app = HttpBySyncOrAsyncView(*(Recording(name, seen) for name in ("asgi", "wsgi", "poll")))
    scope = {
        "type": "http",
        "path": root_path + path,
        "root_path": root_path,
        "query_string": query,
        "headers": list(headers),
    }
    async_to_sync(app)(scope, None, None)
    [(handler, scope)] = seen
    return handler, scope


@pytest.mark.parametrize(
    ("path", "query", "handler"),
    [
        (f"{CONVERSATION}/turns/3/events/", b"", "asgi"),
        (f"{CONVERSATION}/turns/3/", b"", "wsgi"),
        (f"{CONVERSATION}/turns/3/", b"wait=0", "wsgi"),
        (f"{CONVERSATION}/turns/3/", b"wait=30", "poll"),
        (f"{CONVERSATION}/turns/", b"", "wsgi"),
        ("/health/", b"", "wsgi"),
        ("/admin/login/", b"next=/admin/", "wsgi"),
        ("/api/v1/no-such-thing/", b"", "wsgi"),
        ("/nowhere", b"", "wsgi"),
    ],
)
def test_each_request_goes_to_the_handler_that_suits_it(path, query, handler):
    assert dispatch(path, query)[0] == handler


@pytest.mark.parametrize(
    ("prefer", "handler"),
    [
        ([b"wait=30"], "poll"),
        ([b"respond-async, wait=5"], "poll"),
        ([b"respond-async", b"wait=5"], "poll"),
        ([b"return=minimal"], "wsgi"),
        ([b"wait=0"], "wsgi"),
        ([b"wait=soon"], "wsgi"),  # refused at once by the view: nothing to wait for
    ],
)
def test_a_submission_that_prefers_to_wait_goes_to_the_long_poll_pool(prefer, handler):
    headers = [(b"prefer", value) for value in prefer]

    assert dispatch(f"{CONVERSATION}/turns/", headers=headers)[0] == handler


def test_behind_a_path_prefix_the_stream_still_goes_to_the_asgi_handler():
    handler, _ = dispatch(f"{CONVERSATION}/turns/3/events/", root_path="/orchestra")

    assert handler == "asgi"


def test_headers_with_an_underscore_never_reach_the_wsgi_handler():
    headers = [(b"x_forwarded_proto", b"https"), (b"x-forwarded-proto", b"http")]

    handler, scope = dispatch("/health/", headers=headers)

    assert (handler, scope["headers"]) == ("wsgi", [(b"x-forwarded-proto", b"http")])


# --- through the real application --------------------------------------------------------------


def request(method: str, path: str, headers: list, chunks: list[bytes]) -> tuple[int, dict, bytes]:
    """One HTTP request through `http_app`, the body sent in `chunks`."""
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
