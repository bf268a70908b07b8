"""The per-conversation execution lock.

Whoever holds it runs the conversation's turns in number order. Full stack: a redis-py
asyncio Lock (owner token, TTL, extended while held), so every worker process sees it.
Embedded: a set of held conversation ids in this process.
"""

import contextlib
import threading
import time

from django.conf import settings
from redis.exceptions import LockError

from conversations import metrics
from infrastructure.redis_client import async_client


def _name(conversation_id: str) -> str:
    return f"orchestra:lock:conversation:{conversation_id}"


class _RedisConversationLock:
    def __init__(self, conversation_id: str):
        self._lock = async_client().lock(
            _name(conversation_id), timeout=settings.TURN_LEASE_SECONDS
        )

    async def acquire(self) -> bool:
        return await self._lock.acquire(blocking=False)

    async def extend(self) -> bool:
        try:
            await self._lock.reacquire()
        except LockError:
            return False
        return True

    async def release(self) -> None:
        # Expired and possibly taken over: then nothing of ours is left to release.
        with contextlib.suppress(LockError):
            await self._lock.release()


class _LocalConversationLock:
    _held: set[str] = set()
    _mutex = threading.Lock()

    def __init__(self, conversation_id: str):
        self._id = conversation_id

    async def acquire(self) -> bool:
        with self._mutex:
            if self._id in self._held:
                return False
            self._held.add(self._id)
            return True

    async def extend(self) -> bool:
        return True

    async def release(self) -> None:
        with self._mutex:
            self._held.discard(self._id)


async def acquire_conversation_lock(conversation_id) -> "_RedisConversationLock | None":
    """The conversation's lock if it was free, else None (someone else runs its turns)."""
    lock_class = _RedisConversationLock if settings.REDIS_URL else _LocalConversationLock
    lock = lock_class(str(conversation_id))
    started = time.perf_counter()
    acquired = await lock.acquire()
    metrics.LOCK_WAIT.observe(time.perf_counter() - started)
    return lock if acquired else None
