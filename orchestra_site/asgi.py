"""ASGI entry point: Django for HTTP, Channels for WebSockets.

HTTP goes to Django's WSGI handler on a fixed pool of WEB_THREADS threads
(orchestra_site/wsgi_threads.py); waiting for a turn and streaming its events finish on
the event loop (infrastructure/loop_responses.py) and hold no thread. Django's ASGI
handler holds a thread for every request in flight, waits included (docs/performance.md).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra_site.settings")
# Django must be set up before anything imports models.
get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from infrastructure.request_id import RequestIdASGIMiddleware  # noqa: E402
from orchestra_site.lifecycle import BindWorkersToServer  # noqa: E402
from orchestra_site.routing import websocket_urlpatterns  # noqa: E402
from orchestra_site.wsgi_threads import WsgiOnThreads  # noqa: E402

router = ProtocolTypeRouter(
    {
        "http": WsgiOnThreads(get_wsgi_application(), settings.WEB_THREADS, "web"),
        "websocket": AllowedHostsOriginValidator(
            RequestIdASGIMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)

application = BindWorkersToServer(router)
