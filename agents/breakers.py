"""A circuit breaker per model (pybreaker). Full stack: its state lives in Redis
(CircuitRedisStorage), so every process sees the same open circuit; embedded: memory."""

import contextlib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pybreaker
import structlog
from django.conf import settings
from redis.exceptions import RedisError

from agents import metrics
from agents.providers.base import CallbackError, ProviderError, StreamAborted
from infrastructure.off_loop import off_loop
from infrastructure.redis_client import sync_client

log = structlog.get_logger("orchestra.breakers")

# Errors that say nothing about the model's health: our request was wrong.
NOT_SYSTEMIC = frozenset({"client", "context_overflow"})


class PreciseRedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage keeps `opened_at` in whole seconds, so a circuit could
    close up to a second early; this one keeps it to the microsecond."""

    @property
    def opened_at(self) -> datetime | None:
        try:
            value = self._redis.get(self._namespace("opened_at_precise"))
        except RedisError:
            log.warning("breaker.redis_unavailable", exc_info=True)
            return None
        return datetime.fromtimestamp(float(value), UTC) if value else None

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        try:
            self._redis.set(self._namespace("opened_at_precise"), repr(now.timestamp()))
        except RedisError:
            log.warning("breaker.redis_unavailable", exc_info=True)


class _StateGauge(pybreaker.CircuitBreakerListener):
    """orchestra_circuit_breaker_state follows every change this process makes or notices
    (pybreaker reads the shared state before each call)."""

    def state_change(self, cb, old_state, new_state) -> None:
        metrics.CIRCUIT_STATE.labels(cb.name).set(metrics.STATE_VALUES.get(new_state.name, 0))


_breakers: dict[str, tuple[tuple, pybreaker.CircuitBreaker]] = {}
_mutex = threading.Lock()


def _not_systemic(exc: BaseException) -> bool:
    # A stream we stopped ourselves (the turn was cancelled), or a failure of our own
    # callbacks, says nothing either.
    return isinstance(exc, StreamAborted | CallbackError) or (
        isinstance(exc, ProviderError) and exc.kind in NOT_SYSTEMIC
    )


def breaker_for(model) -> pybreaker.CircuitBreaker:
    provider = model.provider
    config = (provider.breaker_fail_max, provider.breaker_reset_s, bool(settings.REDIS_URL))
    with _mutex:
        cached = _breakers.get(model.name)
        if cached and cached[0] == config:
            return cached[1]
        if settings.REDIS_URL:
            storage = PreciseRedisStorage(
                pybreaker.STATE_CLOSED, sync_client(), namespace=f"orchestra:breaker:{model.name}"
            )
        else:
            storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        breaker = pybreaker.CircuitBreaker(
            fail_max=provider.breaker_fail_max,
            reset_timeout=provider.breaker_reset_s,
            state_storage=storage,
            name=model.name,
            exclude=[_not_systemic],
            # Re-raise the call's own error on the failure that opens the circuit, so the
            # retry loop still sees what happened.
            throw_new_error_on_trip=False,
            listeners=[_StateGauge()],
        )
        _breakers[model.name] = (config, breaker)
        return breaker


def circuit_state(model) -> str:
    """closed, open or half-open; an open circuit past its reset time reads half-open."""
    breaker = breaker_for(model)
    state = breaker.current_state
    if state == pybreaker.STATE_OPEN:
        opened_at = breaker._state_storage.opened_at
        if opened_at and datetime.now(UTC) >= opened_at + timedelta(seconds=breaker.reset_timeout):
            state = pybreaker.STATE_HALF_OPEN
    metrics.CIRCUIT_STATE.labels(model.name).set(metrics.STATE_VALUES.get(state, 0))
    return state


def is_open(model) -> bool:
    return circuit_state(model) == pybreaker.STATE_OPEN


@contextlib.asynccontextmanager
async def calling(model) -> AsyncIterator[None]:
    """The model's circuit breaker around an async call: CircuitBreakerError when it is
    open. Its state is read and written off the event loop (in Redis in full stack)."""
    breaker = await off_loop(breaker_for, model)  # built once per model: a Redis write
    guard = breaker.calling()
    await off_loop(guard.__enter__)
    try:
        yield
    except BaseException as error:
        await off_loop(guard.__exit__, type(error), error, error.__traceback__)
        raise
    await off_loop(guard.__exit__, None, None, None)
