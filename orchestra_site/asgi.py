"""ASGI entry point: Django for HTTP, Channels for WebSockets.

HTTP requests for Django's sync views run through Django's WSGI handler on fixed pools of
threads (a2wsgi): long-polls (`?wait=`) on a pool of their own, so that waiting clients
never hold up the others, everything else on the main pool. Django's ASGI handler would
run each of them in a new thread with several hops between the event loop and that
thread, which on this project's hot path costs 4 to 5 ms of CPU per request
(docs/performance.md). Async views, which stream from the event loop, go to Django's
ASGI handler.
"""

import contextvars
import os
import threading
from urllib.parse import parse_qs

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra_site.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

import structlog  # noqa: E402
from a2wsgi import WSGIMiddleware  # noqa: E402
from asgiref.sync import iscoroutinefunction  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import Resolver404, resolve  # noqa: E402
from django.utils import timezone, translation  # noqa: E402

from conversations.runtime_binding import BindWorkersToServer  # noqa: E402
from orchestra_site.gc_tuning import freeze_startup_objects  # noqa: E402
from orchestra_site.request_id import RequestIdASGIMiddleware  # noqa: E402
from orchestra_site.routing import websocket_urlpatterns  # noqa: E402


class HttpBySyncOrAsyncView:
    """Sends each HTTP request to the handler that suits it: async views to Django's ASGI
    handler, long-polls to their own thread pool, everything else (sync views, unknown
    paths) to the main thread pool."""

    def __init__(self, asgi_app, wsgi_app, long_poll_app):
        self.asgi_app = asgi_app
        self.wsgi_app = wsgi_app
        self.long_poll_app = long_poll_app

    async def __call__(self, scope, receive, send):
        if _is_async_view(scope):
            return await self.asgi_app(scope, receive, send)
        # As Django's ASGI handler does: a header with "_" in its name could pass for one
        # with "-" once both are HTTP_… in the WSGI environ (X_FORWARDED_PROTO spoofing).
        headers = [(name, value) for name, value in scope["headers"] if b"_" not in name]
        if any(name == b"transfer-encoding" for name, _ in headers):
            headers, receive = await _with_content_length(headers, receive)
        scope = {**scope, "headers": headers}
        app = self.long_poll_app if _is_long_poll(scope) else self.wsgi_app
        return await app(scope, receive, send)


def _is_async_view(scope) -> bool:
    path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
    try:
        return iscoroutinefunction(resolve(path).func)
    except Resolver404:
        return False


async def _with_content_length(headers, receive):
    """A chunked body read whole (up to Django's upload limit and one byte more, which
    Django then refuses), with the Content-Length WSGI and DRF read bodies by."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    body, more = b"", True
    while more and len(body) < limit:
        message = await receive()
        if message["type"] != "http.request":  # the client has gone
            return headers, _replay(message, receive)
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(name, value) for name, value in headers if name != b"transfer-encoding"]
    headers.append((b"content-length", str(len(body)).encode()))
    return headers, _replay({"type": "http.request", "body": body}, receive)


def _replay(first_message, receive):
    pending = [first_message]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


def _is_long_poll(scope) -> bool:
    wait = parse_qs(scope.get("query_string", b"").decode("latin1")).get("wait", ["0"])[-1]
    return wait not in ("", "0")


class InThreadContext:
    """Runs a WSGI app in its worker thread's own contextvars context, kept from one
    request to the next.

    a2wsgi runs each request in a fresh copy of the event loop's context. Django keeps its
    cache clients in context-local storage, so in a fresh context every request would
    build its cache client again (for Redis, a new client object per request). A
    thread serves one request at a time, so one context per thread is never shared.
    """

    def __init__(self, app):
        self.app = app
        self._local = threading.local()

    def __call__(self, environ, start_response):
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = contextvars.Context()
        return _IterateInContext(context, context.run(self.app, environ, start_response))


class _IterateInContext:
    """The response, read and closed in the context that made it (closing it is what
    sends Django's request_finished)."""

    def __init__(self, context: contextvars.Context, response):
        self.context = context
        self.response = response

    def __iter__(self):
        chunks = self.context.run(iter, self.response)
        while True:
            try:
                yield self.context.run(next, chunks)
            except StopIteration:
                return

    def close(self):
        try:
            if hasattr(self.response, "close"):
                self.context.run(self.response.close)
        finally:
            self.context.run(_forget_request_state)


def _forget_request_state():
    """What a request may leave in its thread's context for the next one: log context
    (its request id), an activated language or time zone."""
    structlog.contextvars.clear_contextvars()
    translation.deactivate()
    timezone.deactivate()


http_app = HttpBySyncOrAsyncView(
    django_asgi_app,
    WSGIMiddleware(InThreadContext(get_wsgi_application()), workers=settings.WEB_THREADS),
    WSGIMiddleware(InThreadContext(get_wsgi_application()), workers=settings.WEB_LONG_POLL_THREADS),
)

router = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            RequestIdASGIMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)

application = BindWorkersToServer(router)

# Everything above is kept for the life of the process: out of the collector's way.
freeze_startup_objects()
