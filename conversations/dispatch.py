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
from tenacity import AsyncRetrying, stop_after_attempt, wait_fixed

from infrastructure import event_loops
from infrastructure.off_loop import off_loop

log = structlog.get_logger("orchestra.turns")

RUN_TURNS = "conversations.run_conversation_turns"
RECOVER_TURNS = "conversations.recover_turns"


# A hand-off that failed (the broker did not answer) is tried again this often, this many
# times, before it is left to recovery (TURN_REQUEUE_AFTER_SECONDS).
RETRY_EVERY_S = 1.0
RETRIES = 30


def enqueue_conversation(conversation_id: uuid.UUID | str) -> None:
    """Hand the conversation's turns to a worker. If the broker does not answer, the
    hand-off is tried again in the background, so that a turn recorded meanwhile runs
    within seconds of the broker's return."""
    try:
        _hand_off(str(conversation_id))
    except Exception:
        log.warning("turn.enqueue_failed", conversation=str(conversation_id), exc_info=True)
        loop = event_loops.background_loop()
        asyncio.run_coroutine_threadsafe(_hand_off_again(str(conversation_id)), loop)


def _hand_off(conversation_id: str) -> None:
    if settings.TURN_EXECUTOR == "celery":
        current_app.send_task(RUN_TURNS, args=[conversation_id])
    else:
        current_app.tasks[RUN_TURNS](conversation_id)


async def _hand_off_again(conversation_id: str) -> None:
    retrying = AsyncRetrying(
        stop=stop_after_attempt(RETRIES), wait=wait_fixed(RETRY_EVERY_S), reraise=True
    )
    try:
        await asyncio.sleep(RETRY_EVERY_S)
        await retrying(off_loop, _hand_off, conversation_id)
    except Exception:
        log.warning("turn.enqueue_given_up", conversation=conversation_id, exc_info=True)
    else:
        log.info("turn.enqueued_after_retry", conversation=conversation_id)


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
