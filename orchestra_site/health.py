"""Readiness checks of the services Orchestra depends on.

Each check answers `healthy`, `degraded` (answered, but slowly, or every connection of
the process's pool is taken), `failing`, or
`not_configured` (the embedded mode does without it). Checks use short timeouts so a
dead dependency is reported within seconds rather than hanging the probe.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from kombu import Connection

from infrastructure.redis_client import pool_usage

HEALTHY, DEGRADED, FAILING, NOT_CONFIGURED = "healthy", "degraded", "failing", "not_configured"


@dataclass(frozen=True)
class CheckResult:
    status: str
    latency_ms: float | None = None
    error: str | None = None
    required: bool = True

    def as_dict(self) -> dict:
        body = {"status": self.status, "latency_ms": self.latency_ms, "required": self.required}
        if self.error:
            body["error"] = self.error
        return body


def _timed(probe: Callable[[], None], *, required: bool) -> CheckResult:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is "failing"
        latency = round((time.perf_counter() - started) * 1000, 1)
        return CheckResult(FAILING, latency, type(exc).__name__, required)
    latency = round((time.perf_counter() - started) * 1000, 1)
    status = DEGRADED if latency > settings.READY_DEGRADED_LATENCY_MS else HEALTHY
    return CheckResult(status, latency, None, required)


def check_database() -> CheckResult:
    pool = getattr(connection, "pool", None)
    if pool is not None:
        stats = pool.get_stats()
        exhausted = stats["pool_size"] >= stats["pool_max"] and not stats["pool_available"]
        if stats.get("requests_waiting") or exhausted:
            # Answering, but every connection is taken: requests wait for one.
            return CheckResult(DEGRADED, None, "PoolExhausted", required=True)

    def probe():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    return _timed(probe, required=True)


def _redis_client(url: str) -> redis.Redis:
    timeout = settings.READY_CHECK_TIMEOUT_SECONDS
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def check_redis() -> CheckResult:
    if not settings.REDIS_URL:
        return CheckResult(NOT_CONFIGURED, required=False)

    usage = pool_usage()
    if usage is not None and usage[0] >= usage[1]:
        # Answering, but every connection of this process's pool is taken.
        return CheckResult(DEGRADED, None, "PoolExhausted", required=True)

    def probe():
        client = _redis_client(settings.REDIS_URL)
        try:
            client.ping()
        finally:
            client.close()

    return _timed(probe, required=True)


def check_channel_layer() -> CheckResult:
    if not settings.REDIS_URL:
        return CheckResult(NOT_CONFIGURED, required=False)

    def probe():
        layer = get_channel_layer()

        async def round_trip():
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "ready.check"})
            await layer.receive(channel)

        async def bounded():
            await asyncio.wait_for(round_trip(), settings.READY_CHECK_TIMEOUT_SECONDS)

        async_to_sync(bounded)()

    return _timed(probe, required=True)


def check_broker() -> CheckResult:
    if not settings.CELERY_BROKER_URL:
        return CheckResult(NOT_CONFIGURED, required=False)

    def probe():
        timeout = settings.READY_CHECK_TIMEOUT_SECONDS
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        with Connection(
            settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options
        ) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            # Opening a channel makes the broker answer (the Redis transport pings), not
            # merely accept a connection.
            conn.default_channel.close()

    return _timed(probe, required=True)


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "redis": check_redis,
    "channel_layer": check_channel_layer,
    "broker": check_broker,
}


def _in_thread(check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    finally:
        connection.close()  # this thread's own database connection


def readiness() -> tuple[bool, dict[str, dict]]:
    """Run every check, concurrently, each bounded in time (a dependency that accepts
    connections and never answers must not hang the probe). Returns (ready, {name:
    result}); not ready when a required one fails."""
    deadline = settings.READY_CHECK_TIMEOUT_SECONDS
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="ready-check")
    futures = {name: pool.submit(_in_thread, check) for name, check in CHECKS.items()}
    wait(futures.values(), timeout=deadline)
    pool.shutdown(wait=False, cancel_futures=True)
    results = {
        name: future.result()
        if future.done()
        else CheckResult(FAILING, round(deadline * 1000, 1), "Timeout")
        for name, future in futures.items()
    }
    ready = not any(r.required and r.status == FAILING for r in results.values())
    return ready, {name: r.as_dict() for name, r in results.items()}
