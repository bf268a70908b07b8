"""The per-conversation execution lock.

Whoever holds it runs the conversation's turns in number order. Full stack: a redis-py
Lock (owner token, TTL, extended while held), so every worker process sees it. Embedded:
a set of held conversation ids in this process.
"""

import contextlib
import threading
import time

from django.conf import settings
from redis.exceptions import LockError

from conversations import metrics
from infrastructure.redis_client import sync_client


class _RedisConversationLock:
    def __init__(self, conversation_id: str):
        self._lock = sync_client().lock(
            f"orchestra:lock:conversation:{conversation_id}",
            timeout=settings.TURN_LEASE_SECONDS,
            thread_local=False,  # the heartbeat thread extends it
        )

    def acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def extend(self) -> bool:
        try:
            self._lock.reacquire()
        except LockError:
            return False
        return True

    def release(self) -> None:
        # Expired and possibly taken over: then nothing of ours is left to release.
        with contextlib.suppress(LockError):
            self._lock.release()


class _LocalConversationLock:
    _held: set[str] = set()
    _mutex = threading.Lock()

    def __init__(self, conversation_id: str):
        self._id = conversation_id

    def acquire(self) -> bool:
        with self._mutex:
            if self._id in self._held:
                return False
            self._held.add(self._id)
            return True

    def extend(self) -> bool:
        return True

    def release(self) -> None:
        with self._mutex:
            self._held.discard(self._id)


def acquire_conversation_lock(conversation_id: str):
    """The conversation's lock if it was free, else None (someone else runs its turns)."""
    lock_class = _RedisConversationLock if settings.REDIS_URL else _LocalConversationLock
    lock = lock_class(str(conversation_id))
    started = time.perf_counter()
    acquired = lock.acquire()
    metrics.LOCK_WAIT.observe(time.perf_counter() - started)
    return lock if acquired else None
