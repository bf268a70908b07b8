"""ASGI entry point: Django for HTTP, Channels for WebSockets.

Django's sync views run on fixed pools of threads (orchestra_site/wsgi_threads.py),
long-polls on a pool of their own so that waiting clients never hold up the others:
Django's ASGI handler spent 4 to 5 ms more CPU per request hopping between the event loop
and a new thread (docs/performance.md). Async views go to Django's ASGI handler.
"""

import os
from urllib.parse import parse_qs

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra_site.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from asgiref.sync import iscoroutinefunction  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import Resolver404, resolve  # noqa: E402

from infrastructure.prefer import preferred_wait  # noqa: E402
from infrastructure.request_id import RequestIdASGIMiddleware  # noqa: E402
from orchestra_site.lifecycle import BindWorkersToServer  # noqa: E402
from orchestra_site.routing import websocket_urlpatterns  # noqa: E402
from orchestra_site.wsgi_threads import WsgiOnThreads  # noqa: E402


class HttpBySyncOrAsyncView:
    """Sends each HTTP request to the handler that suits it: async views to Django's ASGI
    handler, long-polls and submissions that wait for their turn to their own thread
    pool, everything else (sync views, unknown paths) to the main thread pool."""

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
        scope = {**scope, "headers": headers}
        app = self.long_poll_app if _is_long_poll(scope) else self.wsgi_app
        return await app(scope, receive, send)


def _is_async_view(scope) -> bool:
    path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
    try:
        return iscoroutinefunction(resolve(path).func)
    except Resolver404:
        return False


def _is_long_poll(scope) -> bool:
    """A request that may wait for a turn to end: `?wait=N` (a turn), `Prefer: wait=N` (a
    submission)."""
    wait = parse_qs(scope.get("query_string", b"").decode("latin1")).get("wait", ["0"])[-1]
    if wait not in ("", "0"):
        return True
    prefer = b",".join(value for name, value in scope["headers"] if name == b"prefer")
    try:
        return preferred_wait(prefer.decode("latin1")) > 0
    except ValueError:
        return False  # refused at once by the view


http_app = HttpBySyncOrAsyncView(
    django_asgi_app,
    WsgiOnThreads(get_wsgi_application(), settings.WEB_THREADS, "web"),
    WsgiOnThreads(get_wsgi_application(), settings.WEB_LONG_POLL_THREADS, "long-poll"),
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
