from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown
from django.conf import settings

from conversations.execution import drain
from conversations.runner import turn_runner
from conversations.services import turns_recover


@shared_task(name="conversations.run_conversation_turns", ignore_result=True)
def run_conversation_turns(conversation_id: str) -> None:
    """Have this process's runner drain the conversation's queued turns; returns once the
    drain has started. Idempotent: with nothing queued it does nothing, and with the
    conversation's lock taken by another worker it leaves the work to it."""
    turn_runner().start(drain, conversation_id)


@shared_task(name="conversations.recover_turns", ignore_result=True)
def recover_turns() -> dict[str, int]:
    return turns_recover()


@worker_shutdown.connect  # a worker that runs tasks in its own process (threads, solo)
@worker_process_shutdown.connect  # each child of a prefork worker
def _let_running_turns_finish(**_kwargs) -> None:
    """A worker stopped (SIGTERM) finishes the turns it runs, as a task would."""
    turn_runner().wait_idle(timeout=settings.TURN_TIMEOUT_SECONDS)
