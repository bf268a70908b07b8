"""ASGI entry point: Django for HTTP, Channels for WebSockets.

HTTP requests for Django's sync views (everything but the SSE stream) run through Django's
WSGI handler on a fixed pool of threads (a2wsgi). Django's ASGI handler would run each of
them in a new thread with several hops between the event loop and that thread, which on
this project's hot path costs 4 to 5 ms of CPU per request (docs/performance.md). Async
views, which stream from the event loop, go to Django's ASGI handler.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra_site.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from a2wsgi import WSGIMiddleware  # noqa: E402
from asgiref.sync import iscoroutinefunction  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import Resolver404, resolve  # noqa: E402

from conversations.runtime_binding import BindWorkersToServer  # noqa: E402
from orchestra_site.request_id import RequestIdASGIMiddleware  # noqa: E402
from orchestra_site.routing import websocket_urlpatterns  # noqa: E402


class HttpBySyncOrAsyncView:
    """Sends a request to the handler that suits its view: async views to Django's ASGI
    handler, everything else (sync views, unknown paths) to the WSGI thread pool."""

    def __init__(self, asgi_app, wsgi_app):
        self.asgi_app = asgi_app
        self.wsgi_app = wsgi_app

    async def __call__(self, scope, receive, send):
        try:
            is_async = iscoroutinefunction(resolve(scope["path"]).func)
        except Resolver404:
            is_async = False
        app = self.asgi_app if is_async else self.wsgi_app
        return await app(scope, receive, send)


http_app = HttpBySyncOrAsyncView(
    django_asgi_app, WSGIMiddleware(get_wsgi_application(), workers=settings.WEB_THREADS)
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
