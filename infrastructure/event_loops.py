"""The event loops of a process, for async I/O that sync code needs done.

- The *server loop*: in a web process, the ASGI server's own loop, bound when the server
  starts (orchestra_site/lifecycle.py). The in-memory channel layer lives there.
- The *background loop*: a daemon thread's loop, started on first use: it runs turns
  (conversations/runner.py) and, where there is no server loop (a Celery worker, a
  command), the async I/O sync code asks for.
"""

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_server_loop: asyncio.AbstractEventLoop | None = None
_background_loop: asyncio.AbstractEventLoop | None = None
_mutex = threading.Lock()


def bind_server_loop() -> None:
    """Call from inside the ASGI server's loop, once."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def background_loop() -> asyncio.AbstractEventLoop:
    global _background_loop
    with _mutex:
        if _background_loop is None or _background_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="background-loop", daemon=True).start()
            _background_loop = loop
        return _background_loop


def io_loop() -> asyncio.AbstractEventLoop:
    """The loop for async I/O asked for by sync code: the server's, else the background."""
    loop = _server_loop
    if loop is not None and not loop.is_closed():
        return loop
    return background_loop()


def run_sync(
    function: Callable[P, Awaitable[T]], /, *args: P.args, timeout: float = 30, **kwargs: P.kwargs
) -> T:
    """`await function(*args, **kwargs)` on the io loop, from sync code; its result."""
    loop = io_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("run_sync() would wait on the loop it runs on: await instead.")
    return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), loop).result(timeout)


def _forget_loops() -> None:
    """A forked child has none of its parent's threads, nor its server."""
    global _server_loop, _background_loop
    _server_loop = _background_loop = None


os.register_at_fork(after_in_child=_forget_loops)
