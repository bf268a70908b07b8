"""The turn runner of a process: conversations are drained on its background event loop,
hundreds at once, each a task on the loop rather than a thread.

Celery hands it conversations (conversations/tasks.py), in the embedded mode so does the
web process itself. A hand-off returns as soon as the drain has started; with
TURN_RUNNER_CAPACITY drains under way it waits for one to end, so a Celery worker takes no
more than its process can run. A process that dies loses the drains it ran; recovery runs
their turns again once their leases end.
"""

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable

import structlog
from django.conf import settings

from infrastructure import event_loops

log = structlog.get_logger("orchestra.turns")


class TurnRunner:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._loop = event_loops.background_loop()
        self._slots = asyncio.run_coroutine_threadsafe(self._make_slots(), self._loop).result()
        self._running: set[concurrent.futures.Future] = set()
        self._mutex = threading.Lock()

    async def _make_slots(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.capacity)

    def start(self, job: Callable[..., Awaitable], *args) -> None:
        """Run `job(*args)` on the loop, with the caller's context (its log fields); return
        once it has started, after waiting for room if the runner is full."""
        started = threading.Event()
        future = asyncio.run_coroutine_threadsafe(self._run(job, args, started), self._loop)
        with self._mutex:
            self._running.add(future)
        future.add_done_callback(self._forget)
        started.wait()

    async def _run(self, job, args, started: threading.Event) -> None:
        async with self._slots:
            started.set()
            try:
                await job(*args)
            except Exception:
                log.exception("turn.runner_job_failed", job=getattr(job, "__name__", job))

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._mutex:
            self._running.discard(future)

    @property
    def in_flight(self) -> int:
        with self._mutex:
            return len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs or waits to run; whether that happened in time."""
        with self._mutex:
            running = list(self._running)
        _done, pending = concurrent.futures.wait(running, timeout=timeout)
        return not pending


_runner: TurnRunner | None = None
_runner_mutex = threading.Lock()


def turn_runner() -> TurnRunner:
    global _runner
    with _runner_mutex:
        if _runner is None:
            _runner = TurnRunner(settings.TURN_RUNNER_CAPACITY)
        return _runner


def _forget_runner() -> None:
    global _runner
    _runner = None


os.register_at_fork(after_in_child=_forget_runner)
