"""Django's WSGI handler served over ASGI on a fixed pool of threads, one hand-off per
request.

The event loop reads the request's body, a pool thread runs Django and reads the whole
response, the event loop sends it. a2wsgi, which served this path before, crossed between
the loop and the thread for every piece instead (the body, the response's start, each
chunk, its end: four round trips for a turn's submission); one crossing costs half a
millisecond less CPU per request here (docs/performance.md §4). Streaming responses
(static files, downloads) still go out chunk by chunk as the thread produces them.

Each pool thread runs its requests in a contextvars context of its own, kept from one
request to the next: Django keeps its cache clients in context-local storage, and a fresh
context per request would build them again every time. A thread serves one request at a
time, so its context is never shared; what a request may leave in it (log context,
language, time zone) is cleared when its response is closed.
"""

import asyncio
import contextvars
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog
from a2wsgi.wsgi import build_environ
from django.conf import settings
from django.utils import timezone, translation


class WsgiOnThreads:
    def __init__(self, app, threads: int, name: str):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._local = threading.local()

    async def __call__(self, scope, receive, send):
        # In memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, on disk beyond, as Django keeps uploads.
        with tempfile.SpooledTemporaryFile(settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
            if not await _read_body(body, scope, receive):
                return  # the client left before its request was whole
            environ = build_environ(scope, body)
            environ["CONTENT_LENGTH"] = str(body.tell())
            body.seek(0)
            loop = asyncio.get_running_loop()
            whole = await loop.run_in_executor(self.executor, self._serve, environ, loop, send)
        for message in whole:
            await send(message)

    def _serve(self, environ, loop, send):
        """In a pool thread: the response's messages, or none if it streamed them."""
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = contextvars.Context()
        return context.run(self._respond, environ, loop, send)

    def _respond(self, environ, loop, send):
        start = {"type": "http.response.start"}

        def start_response(status, headers, exc_info=None):
            start["status"] = int(status.split(" ", 1)[0])
            start["headers"] = [
                (name.lower().encode("latin1"), value.encode("latin1")) for name, value in headers
            ]

        response = self.app(environ, start_response)
        try:
            if not getattr(response, "streaming", False):
                return start, {"type": "http.response.body", "body": b"".join(response)}

            def hand_over(message):
                asyncio.run_coroutine_threadsafe(send(message), loop).result()

            _stream(response, start, hand_over)
            return ()
        finally:
            try:
                if hasattr(response, "close"):
                    response.close()  # Django's request_finished
            finally:
                _forget_request_state()


def _stream(chunks, start: dict, hand_over) -> None:
    """A streaming response's chunks, each handed to the event loop as it comes (WSGI
    allows start_response until the first chunk)."""
    started = False
    for chunk in chunks:
        if chunk:
            if not started:
                hand_over(start)
                started = True
            hand_over({"type": "http.response.body", "body": chunk, "more_body": True})
    if not started:
        hand_over(start)
    hand_over({"type": "http.response.body", "body": b""})


async def _read_body(body, scope, receive) -> bool:
    """Reads the request's body into `body` (left at its end); False if the client left.
    A body Django refuses by its size (anything but a file upload over
    DATA_UPLOAD_MAX_MEMORY_SIZE) is read only one byte past that limit: its length then
    tells Django to refuse it."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and not _is_multipart(scope):
        limit += 1
    else:
        limit = None
    more = True
    while more and (limit is None or body.tell() < limit):
        message = await receive()
        if message["type"] != "http.request":
            return False
        body.write(message.get("body", b""))
        more = message.get("more_body", False)
    return True


def _is_multipart(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower().startswith(b"multipart/")
    return False


def _forget_request_state():
    """What a request may leave in its thread's context for the next one: log context
    (its request id), an activated language or time zone."""
    structlog.contextvars.clear_contextvars()
    translation.deactivate()
    timezone.deactivate()
