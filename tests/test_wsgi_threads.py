"""orchestra_site/wsgi_threads.py: Django's WSGI handler over ASGI on a pool of threads,
one hand-off per request."""

import asyncio
import contextvars
import hashlib
import json
import sys
import threading

import pytest
import structlog
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from orchestra_site.wsgi_threads import WsgiOnThreads
from tests.asgi_helpers import http_scope, send_http_request


def serve(app, chunks=(b"",), headers=(), method="POST", disconnect=False) -> list[dict]:
    """The ASGI messages `app` sends for one request whose body comes in `chunks`."""
    return serve_and_count_unread(app, chunks, headers, method, disconnect)[0]


def serve_and_count_unread(app, chunks=(b"",), headers=(), method="POST", disconnect=False):
    """serve(), and how many of the request's messages `app` left unread."""
    return send_http_request(app, http_scope(method, "/", headers), chunks, disconnect)


class Response:
    """Django-like: iterable, closable, streaming or not."""

    def __init__(self, chunks, streaming=False, on_close=None):
        self.chunks, self.streaming, self.on_close = chunks, streaming, on_close

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        if self.on_close:
            self.on_close()


def sent_whole(status: int, headers: list, body: bytes) -> list[dict]:
    """The messages of a response sent in one piece."""
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


def test_a_whole_response_goes_out_as_one_start_and_one_body():
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "application/json"), ("X-Thing", "1")])
        return Response([b'{"a": ', b"1}"])

    headers = [(b"content-type", b"application/json"), (b"x-thing", b"1")]
    assert serve(app_on_threads(app)) == sent_whole(201, headers, b'{"a": 1}')


def test_a_streaming_response_goes_out_chunk_by_chunk_and_is_closed_after_the_last():
    events = []

    def app(environ, start_response):
        def chunks():
            for chunk in (b"one", b"", b"two"):
                events.append(("made", chunk))
                yield chunk

        start_response("200 OK", [("Content-Type", "text/plain")])
        return Response(chunks(), streaming=True, on_close=lambda: events.append("closed"))

    messages = serve(app_on_threads(app), method="GET")

    assert messages == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        },
        {"type": "http.response.body", "body": b"one", "more_body": True},
        {"type": "http.response.body", "body": b"two", "more_body": True},
        {"type": "http.response.body", "body": b""},
    ]
    assert events == [("made", b"one"), ("made", b""), ("made", b"two"), "closed"]


def test_a_streaming_response_stops_and_is_closed_when_its_client_leaves():
    made, closed = [], threading.Event()
    first_sent, released = threading.Event(), threading.Event()

    def app(environ, start_response):
        def chunks():
            for index in range(1000):
                made.append(index)
                if index == 1:  # the first chunk is out: hold here until the client left
                    first_sent.set()
                    released.wait(10)
                yield b"x"

        start_response("200 OK", [])
        return Response(chunks(), streaming=True, on_close=closed.set)

    async def run():
        communicator = ApplicationCommunicator(app_on_threads(app), http_scope("GET"))
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output()
        first = await communicator.receive_output()
        await asyncio.get_running_loop().run_in_executor(None, first_sent.wait, 10)
        await communicator.send_input({"type": "http.disconnect"})
        await asyncio.sleep(0.05)  # the watch sees the disconnect
        released.set()
        await communicator.wait(timeout=10)
        return start["status"], first["body"]

    assert async_to_sync(run)() == (200, b"x")
    assert closed.is_set()
    assert made == [0, 1]


def test_a_streaming_response_that_reads_its_upload_as_it_goes_gets_all_of_it():
    """Nothing watches for the client leaving while the app still reads the body."""

    def app(environ, start_response):
        def chunks():
            yield b"first "
            yield environ["wsgi.input"].read(6)

        start_response("200 OK", [])
        return Response(chunks(), streaming=True)

    headers = [*MULTIPART, (b"content-length", b"6")]
    messages = serve(app_on_threads(app), chunks=[b"abc", b"def"], headers=headers)

    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"first abcdef"


def test_the_body_in_chunks_reaches_the_app_whole_with_its_length():
    seen = []

    def app(environ, start_response):
        seen.append((environ["CONTENT_LENGTH"], environ["wsgi.input"].read()))
        start_response("204 No Content", [])
        return Response([])

    serve(app_on_threads(app), chunks=[b"abc", b"", b"defg"])

    assert seen == [("7", b"abcdefg")]


def test_a_client_that_leaves_before_its_body_is_whole_reaches_no_app():
    called = []

    def app(environ, start_response):
        called.append(environ)
        start_response("200 OK", [])
        return Response([b"never"])

    assert serve(app_on_threads(app), chunks=[b"half"], disconnect=True) == []
    assert called == []


def test_a_body_over_the_upload_limit_is_read_one_byte_past_it_and_no_further(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    seen = []

    def app(environ, start_response):
        seen.append((environ["CONTENT_LENGTH"], environ["wsgi.input"].read()))
        start_response("400 Bad Request", [])
        return Response([])

    # The third chunk is never read: the app answers after the second.
    serve(app_on_threads(app), chunks=[b"0123456", b"789ab", b"cdef"])

    assert seen == [("12", b"0123456789ab")]


MULTIPART = [(b"content-type", b"multipart/form-data; boundary=x")]


def test_a_file_upload_over_the_upload_limit_is_read_as_the_app_reads_it_and_arrives_whole(
    settings,
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10  # files are not held to it
    chunks = [bytes([index]) * 700 for index in range(5)]
    seen = []

    def app(environ, start_response):
        seen.append(hashlib.sha256(environ["wsgi.input"].read()).digest())
        start_response("200 OK", [])
        return Response([])

    _, unread = serve_and_count_unread(app_on_threads(app), chunks=chunks, headers=MULTIPART)

    assert (seen, unread) == ([hashlib.sha256(b"".join(chunks)).digest()], 0)


def test_an_upload_the_app_refuses_unread_is_not_read():
    def app(environ, start_response):
        start_response("403 Forbidden", [])
        return Response([b"no"])

    messages, unread = serve_and_count_unread(
        app_on_threads(app), chunks=[b"a" * 100] * 4, headers=MULTIPART
    )

    assert messages[0]["status"] == 403
    assert unread == 4


def test_a_chunked_body_reaches_the_app_with_a_length_instead():
    seen = []

    def app(environ, start_response):
        seen.append((environ["CONTENT_LENGTH"], "HTTP_TRANSFER_ENCODING" in environ))
        start_response("204 No Content", [])
        return Response([])

    serve(app_on_threads(app), chunks=[b"ab", b"c"], headers=[(b"transfer-encoding", b"chunked")])

    assert seen == [("3", False)]


@pytest.mark.parametrize("lazy", ["multipart", "no upload limit"])
def test_a_chunked_body_read_as_the_app_reads_it_is_refused_with_411_and_reaches_no_app(
    settings, lazy
):
    """Django reads such a body only as far as its Content-Length: without one it would
    arrive empty."""
    headers = [(b"transfer-encoding", b"chunked"), (b"x-request-id", b"upload-1")]
    if lazy == "multipart":
        headers.append((b"content-type", b"multipart/form-data; boundary=x"))
    else:
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    seen = []

    def app(environ, start_response):
        seen.append(environ)
        start_response("204 No Content", [])
        return Response([])

    messages, unread = serve_and_count_unread(
        app_on_threads(app), chunks=[b"--x\r\n", b"data"], headers=headers
    )

    assert seen == []
    assert messages[0]["status"] == 411
    assert dict(messages[0]["headers"])[b"x-request-id"] == b"upload-1"
    assert json.loads(messages[1]["body"]) == {
        "error": {
            "code": "length_required",
            "message": "Send this body with a Content-Length header, not chunked.",
            "details": {"Content-Length": ["This header is required."]},
        }
    }
    assert unread == 2


def test_what_the_app_writes_goes_out_before_its_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Set-Cookie", " a=1"), ("Set-Cookie", " b=2")])
        write(b"written, ")
        return Response([b"then returned"])

    headers = [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    assert serve(app_on_threads(app)) == sent_whole(200, headers, b"written, then returned")


def test_an_app_that_never_starts_its_response_is_an_error_and_its_response_is_closed():
    closed = []

    def app(environ, start_response):
        return Response([b"body"], on_close=lambda: closed.append(True))

    with pytest.raises(RuntimeError, match="did not call start_response"):
        serve(app_on_threads(app))
    assert closed == [True]


def test_an_error_after_a_stream_started_goes_up_instead_of_a_new_status():
    def app(environ, start_response):
        start_response("200 OK", [])

        def chunks():
            yield b"first"
            try:
                raise ValueError("broken mid-stream")
            except ValueError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never"

        return Response(chunks(), streaming=True)

    with pytest.raises(ValueError, match="broken mid-stream"):
        serve(app_on_threads(app), method="GET")


def test_requests_on_one_worker_thread_share_its_context_and_not_other_threads():
    """Django's cache clients live in context-local storage: they must outlive the
    request, and the response must be read and closed (request_finished) in the same
    context it was made in."""
    requests = contextvars.ContextVar("requests")
    seen = []

    def app(environ, start_response):
        requests.set(requests.get(0) + 1)
        start_response("200 OK", [])

        def chunks():
            seen.append(("read", requests.get()))
            yield b"ok"

        return Response(chunks(), on_close=lambda: seen.append(("closed", requests.get())))

    one_thread = app_on_threads(app)
    for _ in range(3):
        serve(one_thread)
    serve(app_on_threads(app))  # another thread

    assert seen == [
        ("read", 1), ("closed", 1),
        ("read", 2), ("closed", 2),
        ("read", 3), ("closed", 3),
        ("read", 1), ("closed", 1),
    ]  # fmt: skip
    with pytest.raises(LookupError):
        requests.get()  # nothing leaks into the caller's context


def test_a_requests_log_context_does_not_reach_the_next_request_on_its_thread():
    seen = []

    def app(environ, start_response):
        seen.append(structlog.contextvars.get_contextvars())
        structlog.contextvars.bind_contextvars(request_id=environ["HTTP_X_ID"])
        start_response("200 OK", [])
        return Response([b"ok"])

    one_thread = app_on_threads(app)
    for request_id in (b"first", b"second"):
        serve(one_thread, headers=[(b"x-id", request_id)])

    assert seen == [{}, {}]


def app_on_threads(app):
    return WsgiOnThreads(app, threads=1, name="test")
