"""Handing a conversation's turns to a worker.

Full stack: the Celery task `conversations.run_conversation_turns`, sent by name, for any
worker. Embedded: the same task run on this process's pool of threads, with a timer
standing in for Celery beat's recovery. Either way the task is found in Celery's registry
by its name (conversations/tasks.py), so the modules it runs are not imported here.
"""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import structlog
from celery import current_app
from django.conf import settings
from django.db import close_old_connections

log = structlog.get_logger("orchestra.turns")

RUN_TURNS = "conversations.run_conversation_turns"
RECOVER_TURNS = "conversations.recover_turns"


def enqueue_conversation(conversation_id: uuid.UUID | str) -> None:
    if settings.TURN_EXECUTOR == "celery":
        current_app.send_task(RUN_TURNS, args=[str(conversation_id)])
    else:
        local_worker().submit(conversation_id)


class LocalWorker:
    """The embedded mode's workers: a thread pool off the server's event loop, and a
    recovery timer standing in for Celery beat."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=settings.TURN_WORKER_THREADS, thread_name_prefix="turn-worker"
        )
        self._recovery = threading.Thread(
            target=self._recover_forever, daemon=True, name="turn-recovery"
        )
        self._recovery.start()

    def submit(self, conversation_id: uuid.UUID | str) -> None:
        self._pool.submit(self._run, str(conversation_id))

    @staticmethod
    def _run(conversation_id: str) -> None:
        try:
            current_app.tasks[RUN_TURNS](conversation_id)
        except Exception:
            log.exception("turn.worker_crashed", conversation=conversation_id)
        finally:
            close_old_connections()

    def _recover_forever(self) -> None:
        interval = float(settings.CELERY_BEAT_SCHEDULE["recover-turns"]["schedule"])
        while not self._stopping.is_set():
            try:
                current_app.tasks[RECOVER_TURNS]()
            except Exception:
                log.exception("turn.recovery_failed")
            finally:
                close_old_connections()
            self._stopping.wait(interval)

    def stop(self, wait: bool = True) -> None:
        """Stop the recovery timer and let running turns finish (queued jobs are dropped:
        recovery enqueues their turns again at the next start)."""
        self._stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)


_local_worker: LocalWorker | None = None
_local_worker_mutex = threading.Lock()


def local_worker() -> LocalWorker:
    global _local_worker
    with _local_worker_mutex:
        if _local_worker is None:
            _local_worker = LocalWorker()
        return _local_worker
