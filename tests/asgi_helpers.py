"""One HTTP request driven through an ASGI application, as a server would send it."""

from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator


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
