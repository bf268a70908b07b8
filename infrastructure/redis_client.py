"""Shared Redis clients for locks and event buffers (full stack only)."""

from functools import cache

import redis
import redis.asyncio
from django.conf import settings

# A Redis that stops answering must fail calls, not hang the workers that make them. The
# longest blocking read made with these clients (an SSE wait) is shorter than this.
SOCKET_TIMEOUT_S = 20


@cache
def sync_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=SOCKET_TIMEOUT_S,
    )


def async_client() -> redis.asyncio.Redis:
    """A client for the calling event loop (asyncio clients are bound to one loop)."""
    return redis.asyncio.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=SOCKET_TIMEOUT_S
    )
