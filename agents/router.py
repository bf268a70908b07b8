"""The LLM router: one model call, made reliable.

For each model of the agent's chain, in order: skip it when the request does not fit its
context window or its circuit breaker refuses the call (open); otherwise call it through
one retry loop (tenacity: exponential backoff with jitter, Retry-After honoured, only
retryable errors) inside its circuit breaker. When the model is exhausted, fall back to
the next one. Text already streamed by a failed attempt is taken back with `on_reset`, so
the text of two attempts is never concatenated.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pybreaker
import structlog
from django.conf import settings
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.asyncio import retry_if_exception

from agents import health, metrics
from agents.breakers import calling, is_open
from agents.models import LLMModel
from agents.providers.base import (
    CallbackError,
    Finish,
    ModelRequest,
    ProviderError,
    StreamAborted,
    TextDelta,
    ToolCall,
    Usage,
)
from agents.providers.factory import shared_provider
from agents.providers.local import count_tokens
from infrastructure.off_loop import off_loop

log = structlog.get_logger("orchestra.router")

# Never wait longer than this on a server's Retry-After: the turn holds a lease.
MAX_RETRY_AFTER_S = 30.0


class ContextOverflow(Exception):
    """The request cannot fit this model's context window."""


class AllModelsFailed(Exception):
    """Every model of the chain failed or had its circuit open."""

    def __init__(self, failures: list[tuple[str, str]]):
        super().__init__("; ".join(f"{model}: {why}" for model, why in failures))
        self.failures = failures


@dataclass(frozen=True)
class ModelCall:
    """One attempt at one model, as billed."""

    model: LLMModel
    attempt: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    tokens_estimated: bool
    latency_ms: int
    ttft_ms: int | None
    outcome: str  # ok | error | reset
    error_class: str = ""


@dataclass
class ModelResponse:
    model: LLMModel
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str = ""
    latency_ms: int = 0


async def do_nothing(*args) -> None:
    return None


@dataclass
class RouterCallbacks:
    on_delta: Callable[[str], Awaitable[None]]
    on_reset: Callable[[], Awaitable[None]] = do_nothing
    on_model_call: Callable[[ModelCall], Awaitable[None]] = do_nothing
    should_stop: Callable[[], bool] = lambda: False


def _wait(retry_state: RetryCallState) -> float:
    """The server's Retry-After when it sent one, else exponential backoff with jitter
    (LLM_RETRY_BACKOFF_S before the first retry, doubling, at most 8 s)."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(error, ProviderError) and error.retry_after is not None:
        return min(max(error.retry_after, 0.0), MAX_RETRY_AFTER_S)
    initial = settings.LLM_RETRY_BACKOFF_S
    backoff = wait_exponential_jitter(multiplier=initial, max=8.0, jitter=initial)
    return backoff(retry_state)


def _retryable(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.retryable


async def complete(
    *,
    chain: list[LLMModel],
    request_for: Callable[[LLMModel], ModelRequest],
    callbacks: RouterCallbacks,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ModelResponse:
    """Get one response from the first model of `chain` that can give it.

    `request_for(model)` builds the request for that model (its context window decides how
    much history fits) and raises ContextOverflow when nothing fits.
    """
    failures: list[tuple[str, str]] = []
    previous: LLMModel | None = None
    for model in chain:
        if previous is not None:
            metrics.FALLBACKS.labels(previous.name, model.name).inc()
            log.info("router.fallback", from_model=previous.name, to_model=model.name)
        previous = model
        try:
            request = request_for(model)
        except ContextOverflow:
            failures.append((model.name, "context window too small"))
            continue
        try:
            # An open circuit refuses the call before anything is sent (CircuitBreakerError).
            return await _call_with_retries(model, request, callbacks, sleep)
        except (ProviderError, pybreaker.CircuitBreakerError) as error:
            kind = error.kind if isinstance(error, ProviderError) else "circuit_open"
            failures.append((model.name, kind))
    raise AllModelsFailed(failures)


async def _call_with_retries(model, request, callbacks, sleep) -> ModelResponse:
    attempts = 0

    async def retryable(error: BaseException) -> bool:
        # Once the circuit is open, another attempt could only hit it: fall back at once.
        return _retryable(error) and not await off_loop(is_open, model)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(model.provider.max_retries + 1),
        wait=_wait,
        retry=retry_if_exception(retryable),
        sleep=sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            attempts += 1
            return await _call_once(model, request, callbacks, attempts)
    raise AssertionError("unreachable: tenacity reraises the last error")


async def _call_once(model, request, callbacks: RouterCallbacks, attempt: int) -> ModelResponse:
    """One attempt, inside the model's circuit breaker, reporting its usage either way."""
    try:
        provider = shared_provider(model.provider.config())
    except ValueError as error:  # its stored API key cannot be decrypted
        raise ProviderError("auth", str(error)) from None
    response = ModelResponse(model=model)
    started = time.monotonic()
    first_token: float | None = None
    parts: list[str] = []

    async def report(outcome: str, error_class: str = "") -> None:
        latency_ms = int((time.monotonic() - started) * 1000)
        usage = response.usage or _estimate(request, "".join(parts))
        await callbacks.on_model_call(
            ModelCall(
                model=model,
                attempt=attempt,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                tokens_estimated=not usage.reported,
                latency_ms=latency_ms,
                ttft_ms=int((first_token - started) * 1000) if first_token else None,
                outcome=outcome,
                error_class=error_class,
            )
        )
        metrics.LLM_REQUESTS.labels(model.name, outcome).inc()
        metrics.LLM_LATENCY.labels(model.name).observe(latency_ms / 1000)
        metrics.TOKENS.labels(model.name, "input").inc(usage.input_tokens)
        metrics.TOKENS.labels(model.name, "output").inc(usage.output_tokens)
        await off_loop(health.record_call, model, latency_ms=latency_ms, error=error_class or None)
        response.latency_ms = latency_ms

    try:
        async with calling(model):
            async for event in provider.stream(request):
                if callbacks.should_stop():
                    raise StreamAborted()
                if isinstance(event, TextDelta):
                    first_token = first_token or time.monotonic()
                    parts.append(event.text)
                    try:
                        await callbacks.on_delta(event.text)
                    except Exception as error:
                        raise CallbackError(type(error).__name__) from error
                elif isinstance(event, ToolCall):
                    response.tool_calls.append(event)
                elif isinstance(event, Usage):
                    response.usage = event
                elif isinstance(event, Finish):
                    response.finish_reason = event.reason
    except StreamAborted:
        await report("error", "aborted")
        raise
    except pybreaker.CircuitBreakerError:
        raise  # opened meanwhile by another call: nothing was sent, nothing to bill
    except CallbackError:
        raise  # ours, not the model's: the turn fails, the model is not blamed
    except Exception as error:
        if not isinstance(error, ProviderError):
            # An adapter bug or an unexpected answer: a failure of this model all the same.
            log.exception("router.unexpected_error", model=model.name)
            error = ProviderError("bad_response", type(error).__name__)
        kind = error.kind
        await report("reset" if parts else "error", kind)
        log.warning(
            "router.call_failed", model=model.name, attempt=attempt, kind=kind, streamed=bool(parts)
        )
        if parts:
            await callbacks.on_reset()
        raise error from None
    response.text = "".join(parts)
    await report("ok")
    return response


def _estimate(request: ModelRequest, output: str) -> Usage:
    prompt = sum(count_tokens(str(m.get("content", ""))) for m in request.messages)
    return Usage(input_tokens=prompt, output_tokens=count_tokens(output), reported=False)
