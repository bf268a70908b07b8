"""Shared Redis clients (full stack only), each on a bounded pool of connections.

A client that asks for a connection when the pool is exhausted waits up to
REDIS_POOL_TIMEOUT_SECONDS, then gets a ConnectionError: the request that needed it
answers 503, the others go on. No command on these pools blocks waiting for data, so a
Redis that stops answering fails a call within REDIS_SOCKET_TIMEOUT_SECONDS.
"""

import asyncio
import threading
import weakref
from functools import cache

import redis
import redis.asyncio
from django.conf import settings

_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_async_mutex = threading.Lock()


def _options() -> dict:
    return {
        "max_connections": settings.REDIS_POOL_MAX_CONNECTIONS,
        "timeout": settings.REDIS_POOL_TIMEOUT_SECONDS,
        "socket_connect_timeout": settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        "health_check_interval": 30,
    }


@cache
def sync_client() -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(settings.REDIS_URL, **_options())
    return redis.Redis(connection_pool=pool)


def async_client() -> redis.asyncio.Redis:
    """The client of the running event loop (an asyncio client belongs to one loop)."""
    loop = asyncio.get_running_loop()
    with _async_mutex:
        client = _async_clients.get(loop)
        if client is None:
            pool = redis.asyncio.BlockingConnectionPool.from_url(settings.REDIS_URL, **_options())
            client = _async_clients[loop] = redis.asyncio.Redis(connection_pool=pool)
        return client


async def close_async_client() -> None:
    """Close the running loop's client, for a loop about to end."""
    with _async_mutex:
        client = _async_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def pool_usage() -> tuple[int, int] | None:
    """(connections in use, the most there may be) of this process's sync pool, or None
    before it was made."""
    if not sync_client.cache_info().currsize:
        return None
    pool = sync_client().connection_pool
    in_use = len(pool._connections) - pool.pool.qsize() + pool.pool.queue.count(None)
    return in_use, pool.max_connections
