"""Django's WSGI handler served over ASGI on a fixed pool of threads, one hand-off between
the event loop and a thread per request: about 0.5 ms of CPU less per request than
a2wsgi's hand-off per piece (docs/performance.md).

The event loop reads the body, a pool thread runs Django and reads the whole response, the
event loop sends it. File uploads (multipart), and every body when
DATA_UPLOAD_MAX_MEMORY_SIZE is off, are read as Django reads them, so that it may refuse
one unread; such a body sent chunked, without a Content-Length, is refused with 411
(Django would read it as empty). Streaming responses go out chunk by chunk and stop when
the client leaves. A LoopResponse (a wait, an event stream) leaves its thread at once and
is finished on the event loop.

Each pool thread keeps one contextvars context across its requests, because Django keeps
its cache clients in context-local storage; what a request leaves in it (log context,
language, time zone) is cleared when its response is closed.
"""

import asyncio
import contextlib
import contextvars
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog
from a2wsgi.wsgi import Body, build_environ
from django.conf import settings
from django.utils import timezone, translation

from infrastructure.api_errors import error_body
from infrastructure.loop_responses import LoopResponse
from infrastructure.request_id import HEADER, request_id_of

log = structlog.get_logger("orchestra.http")


class WsgiOnThreads:
    def __init__(self, app, threads: int, name: str):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._local = threading.local()

    async def __call__(self, scope, receive, send):
        # As Django's ASGI handler does: a header with "_" in its name could pass for one
        # with "-" once both are HTTP_… in the WSGI environ (X_FORWARDED_PROTO spoofing).
        scope = {**scope, "headers": [(n, v) for n, v in scope["headers"] if b"_" not in n]}
        loop = asyncio.get_running_loop()
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        headers = dict(scope["headers"])
        if limit is None or headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
            if b"transfer-encoding" in headers and b"content-length" not in headers:
                return await _length_required(scope, headers, send)
            environ = build_environ(scope, Body(loop, receive))
            # The app reads the body from `receive` as it goes, even while it streams its
            # response: nothing else may read it, so the stream is not watched.
            watch_with = None
        else:
            # Read whole, but a body Django refuses by its size only up to the first
            # message past the limit: its length then tells Django to refuse it.
            body = await _read_body(receive, limit + 1)
            if body is None:
                return  # the client left before its request was whole
            environ = build_environ(scope, io.BytesIO(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)  # read: what is left has a length
            watch_with = receive  # the body is read: what comes next is the client leaving
        messages = await loop.run_in_executor(
            self.executor, self._serve, environ, loop, watch_with, send
        )
        if isinstance(messages, LoopResponse):
            await _finish_on_the_loop(messages, send, watch_with)
            return
        for message in messages:
            await send(message)

    def _serve(self, environ, loop, watch_with, send):
        """In a pool thread: the response's messages, or none if it streamed them."""
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = contextvars.Context()
        return context.run(self._respond, environ, loop, watch_with, send)

    def _respond(self, environ, loop, watch_with, send):
        """`watch_with`: the request's `receive`, to stop a streaming response when its
        client leaves, or None."""

        def hand_over(message):
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        start = _Start()
        response = None
        try:
            response = self.app(environ, start.start_response)
            if isinstance(response, LoopResponse):
                return response  # its body runs on the event loop
            if not getattr(response, "streaming", False):
                body = b"".join(response)
                return start.message(), {"type": "http.response.body", "body": start.written + body}
            client_gone = threading.Event()
            watch = watch_with and asyncio.run_coroutine_threadsafe(
                _watch_for_disconnect(watch_with, client_gone), loop
            )
            try:
                _stream(response, start, hand_over, client_gone)
            finally:
                if watch:
                    watch.cancel()
            return ()
        finally:
            try:
                if hasattr(response, "close"):
                    response.close()  # Django's request_finished
            finally:
                _forget_request_state()


class _Start:
    """start_response (PEP 3333) for a response sent once the app has made it, or once
    its first chunk is there."""

    def __init__(self):
        self.status: int | None = None
        self.headers: list = []
        self.written = b""
        self.sent = False

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info is not None:
            if self.sent:  # too late to change the status: let the error go up
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise RuntimeError("start_response was called twice without exc_info.")
        self.status = int(status.split(" ", 1)[0])
        self.headers = [
            (name.strip().lower().encode("latin1"), value.strip().encode("latin1"))
            for name, value in headers
        ]
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write(): kept and sent before the iterable's chunks."""
        self.written += data

    def message(self) -> dict:
        if self.status is None:
            raise RuntimeError("The WSGI application did not call start_response.")
        self.sent = True
        return {"type": "http.response.start", "status": self.status, "headers": self.headers}


def _stream(chunks, start: _Start, hand_over, client_gone: threading.Event) -> None:
    """A streaming response's chunks, each handed to the event loop as it comes (WSGI
    allows start_response until the first chunk), until its client leaves."""
    pending = start.written
    for chunk in chunks:
        if client_gone.is_set():
            return  # nobody left to send the rest to; the caller closes the response
        if chunk:
            if not start.sent:
                hand_over(start.message())
            hand_over({"type": "http.response.body", "body": pending + chunk, "more_body": True})
            pending = b""
    if not start.sent:
        hand_over(start.message())
    hand_over({"type": "http.response.body", "body": pending})


async def _finish_on_the_loop(response: LoopResponse, send, receive) -> None:
    """Run a LoopResponse's body on the loop; stop it if its client leaves first."""
    pump = asyncio.create_task(_pump(response, send))
    if receive is None:
        await pump
        return
    gone = asyncio.create_task(_until_disconnect(receive))
    await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    for task in (pump, gone):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pump


async def _pump(response: LoopResponse, send) -> None:
    started = False
    async for chunk in response.loop_body(response):
        if not started:
            await send(response.start_message())
            started = True
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if not started:
        await send(response.start_message())
    await send({"type": "http.response.body", "body": b""})


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _watch_for_disconnect(receive, client_gone: threading.Event) -> None:
    """Sets `client_gone` when the client leaves (cancelled when the response is sent).
    Only for a request whose body was read whole before the app ran."""
    while (await receive())["type"] != "http.disconnect":
        pass
    client_gone.set()


async def _read_body(receive, limit: int) -> bytes | None:
    """The request's body, read until its end or until it has `limit` bytes; None if the
    client left first."""
    chunks, size, more = [], 0, True
    while more and size < limit:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _length_required(scope, headers: dict, send) -> None:
    """411 in the API's error shape, for a body read lazily that has no length."""
    request_id = request_id_of(headers)
    message = "Send this body with a Content-Length header, not chunked."
    details = {"Content-Length": ["This header is required."]}
    error = error_body("length_required", message, details)
    body = json.dumps(error, separators=(",", ":")).encode()  # as DRF renders errors
    log.info(
        "request.refused",
        method=scope["method"],
        path=scope["path"],
        status=411,
        request_id=request_id,
    )
    await send(
        {
            "type": "http.response.start",
            "status": 411,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (HEADER.lower().encode(), request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _forget_request_state():
    """What a request may leave in its thread's context for the next one: log context
    (its request id), an activated language or time zone."""
    structlog.contextvars.clear_contextvars()
    translation.deactivate()
    timezone.deactivate()
