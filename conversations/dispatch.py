"""Handing a conversation's turns to a worker.

Full stack: the Celery task `conversations.run_conversation_turns`, sent by name, for any
worker. Embedded: the same task run in this process, whose runner then drains the
conversation (conversations/runner.py), with recovery on a timer instead of Celery beat.
Either way the task is found by its name (conversations/tasks.py), so the modules it runs
are not imported here.
"""

import asyncio
import concurrent.futures
import uuid

import structlog
from celery import current_app
from django.conf import settings

from infrastructure import event_loops
from infrastructure.off_loop import off_loop

log = structlog.get_logger("orchestra.turns")

RUN_TURNS = "conversations.run_conversation_turns"
RECOVER_TURNS = "conversations.recover_turns"


def enqueue_conversation(conversation_id: uuid.UUID | str) -> None:
    if settings.TURN_EXECUTOR == "celery":
        current_app.send_task(RUN_TURNS, args=[str(conversation_id)])
    else:
        current_app.tasks[RUN_TURNS](str(conversation_id))


_recovery: concurrent.futures.Future[None] | None = None


def start_embedded_recovery() -> None:
    """The embedded mode's stand-in for Celery beat: recovery now, then every interval."""
    global _recovery
    if _recovery is None or _recovery.done():
        loop = event_loops.background_loop()
        _recovery = asyncio.run_coroutine_threadsafe(_recover_forever(), loop)


async def _recover_forever() -> None:
    interval = float(settings.CELERY_BEAT_SCHEDULE["recover-turns"]["schedule"])
    while True:
        try:
            await off_loop(current_app.tasks[RECOVER_TURNS])
        except Exception:
            log.exception("turn.recovery_failed")
        await asyncio.sleep(interval)
