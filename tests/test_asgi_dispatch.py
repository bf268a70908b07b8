"""orchestra_site/asgi.py: async views (the SSE stream) go to Django's ASGI handler, so
they stream from the event loop; every other HTTP request goes to the WSGI thread pool."""

import pytest
from asgiref.sync import async_to_sync

from orchestra_site.asgi import HttpBySyncOrAsyncView

CONVERSATION = "/api/v1/conversations/2b1b7f3e-3d3c-4c1e-9a55-0d4c8f1f7a10"


class Recording:
    def __init__(self, name: str, seen: list):
        self.name, self.seen = name, seen

    async def __call__(self, scope, receive, send):
        self.seen.append((self.name, scope["path"]))


@pytest.mark.parametrize(
    ("path", "handler"),
    [
        (f"{CONVERSATION}/turns/3/events/", "asgi"),
        (f"{CONVERSATION}/turns/3/", "wsgi"),
        (f"{CONVERSATION}/turns/", "wsgi"),
        ("/health/", "wsgi"),
        ("/admin/login/", "wsgi"),
        ("/api/v1/no-such-thing/", "wsgi"),
        ("/nowhere", "wsgi"),
    ],
)
def test_each_request_goes_to_the_handler_of_its_view(path, handler):
    seen: list = []
    app = HttpBySyncOrAsyncView(Recording("asgi", seen), Recording("wsgi", seen))

    async_to_sync(app)({"type": "http", "path": path}, None, None)

    assert seen == [(handler, path)]
