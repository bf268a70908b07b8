"""Responses finished on the server's event loop, holding no thread while they wait.

A view does on its thread what needs one (authentication, checks, database reads) and
returns a LoopResponse; the server (orchestra_site/wsgi_threads.py) then runs its `body`
on the event loop: a wait for a turn's end, a stream of its events. Django's middleware
has already seen the response; the body may still set its status and headers before it
yields its first chunk.
"""

from collections.abc import AsyncIterator, Callable

from django.http import StreamingHttpResponse


class LoopResponse(StreamingHttpResponse):
    def __init__(
        self, body: Callable[["LoopResponse"], AsyncIterator[bytes]], *, content_type: str, **kwargs
    ):
        super().__init__((), content_type=content_type, **kwargs)
        self.loop_body = body

    def start_message(self) -> dict:
        """The ASGI start of the response as it stands, headers and cookies as Django's
        WSGI handler sends them."""
        headers = [*self.items()]
        headers += [("Set-Cookie", cookie.output(header="")) for cookie in self.cookies.values()]
        return {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": [
                (name.lower().encode("latin1"), str(value).encode("latin1"))
                for name, value in headers
            ],
        }
