"""One HTTP request driven through an ASGI application, as a server would send it; a
response finished on the event loop, as the server finishes it."""

from functools import partial

from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.http import HttpResponse
from rest_framework.test import APIClient

from infrastructure.loop_responses import LoopResponse
from infrastructure.off_loop import INLINE


def http_scope(method: str = "GET", path: str = "/", headers=()) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def send_http_request(app, scope: dict, chunks=(b"",), disconnect=False) -> tuple[list, int]:
    """The messages `app` sent for a request whose body comes in `chunks` (then, with
    `disconnect`, the client leaves), and how many of the request's messages it left
    unread."""

    async def run():
        communicator = ApplicationCommunicator(app, scope)
        for index, chunk in enumerate(chunks):
            more = disconnect or index < len(chunks) - 1
            message = {"type": "http.request", "body": chunk, "more_body": more}
            await communicator.send_input(message)
        if disconnect:
            await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(timeout=10)
        messages = []
        while not await communicator.receive_nothing(timeout=0.01):
            messages.append(await communicator.receive_output())
        return messages, communicator.input_queue.qsize()

    return async_to_sync(run)()


# --- responses finished on the event loop -----------------------------------------------------


def finished(response):
    """A LoopResponse finished as the server finishes it (orchestra_site/wsgi_threads.py):
    its body run on an event loop, here with its database work on the test's thread (its
    connection and transaction), into a plain response the test client's helpers read.
    Any other response as it is."""
    if not isinstance(response, LoopResponse):
        return response
    body = async_to_sync(_run_body)(response)
    final = HttpResponse(body, status=response.status_code)
    for name, value in response.items():
        final[name] = value
    for name in ("wsgi_request", "request", "client", "templates", "context", "resolver_match"):
        if hasattr(response, name):
            setattr(final, name, getattr(response, name))
    if hasattr(response, "client"):
        final.json = partial(response.client._parse_json, final)
    return final


async def _run_body(response) -> bytes:
    token = INLINE.set(True)
    try:
        return b"".join([chunk async for chunk in response.loop_body(response)])
    finally:
        INLINE.reset(token)


class ApiTestClient(APIClient):
    """DRF's test client, whose responses are finished as the server would finish them."""

    def request(self, **kwargs):
        return finished(super().request(**kwargs))
