from celery import shared_task

from conversations.execution import drain_conversation
from conversations.services import turns_recover


@shared_task(name="conversations.run_conversation_turns", ignore_result=True)
def run_conversation_turns(conversation_id: str) -> None:
    """Run the conversation's queued turns. Idempotent: with nothing queued it does nothing,
    and with the conversation's lock taken by another worker it leaves the work to it."""
    drain_conversation(conversation_id)


@shared_task(name="conversations.recover_turns", ignore_result=True)
def recover_turns() -> dict[str, int]:
    return turns_recover()
