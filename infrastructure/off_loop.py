"""Blocking work run from an event loop on a bounded pool of threads, never on the loop.

The ORM, the synchronous Redis client and Django's cache block their thread; on an event
loop that serves hundreds of streams they would stall every one of them. The pool has as
many threads as the process may hold database connections (OFF_LOOP_THREADS), and each
call hands its connection back to the pool when it ends, so database work waits for a
thread, never for a connection.
"""

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")

# Set by a sync caller that runs async code through async_to_sync (a test, a command): the
# blocking work then runs back on the caller's thread, with its connection and transaction.
INLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("off_loop_inline", default=False)

_executor: ThreadPoolExecutor | None = None
_mutex = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _mutex:
        if _executor is None:
            _executor = ThreadPoolExecutor(settings.OFF_LOOP_THREADS, thread_name_prefix="off-loop")
        return _executor


def _forget_pool() -> None:
    """A forked child has none of its parent's threads."""
    global _executor
    _executor = None


os.register_at_fork(after_in_child=_forget_pool)


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on the pool, with the caller's log fields."""
    if INLINE.get():
        return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)
    log_fields = structlog.contextvars.get_contextvars()
    call = functools.partial(_in_thread_context, log_fields, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_pool(), call)


_threads = threading.local()


def _in_thread_context(log_fields: dict, fn: Callable[P, T], /, *args, **kwargs) -> T:
    """Each pool thread keeps one context across its calls: Django keeps its cache clients
    in context-local storage, which a fresh context per call would build again."""
    context = getattr(_threads, "context", None)
    if context is None:
        context = _threads.context = contextvars.Context()
    return context.run(_run_and_release, log_fields, fn, *args, **kwargs)


def _run_and_release(log_fields: dict, fn: Callable[P, T], /, *args, **kwargs) -> T:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**log_fields)
    try:
        return fn(*args, **kwargs)
    finally:
        structlog.contextvars.clear_contextvars()
        # With a connection pool (CONN_MAX_AGE 0) this gives the connection back to it.
        close_old_connections()
