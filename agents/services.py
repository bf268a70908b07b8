"""Writes and checks of the agents app."""

import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync

from agents.models import Provider
from agents.providers.base import ModelRequest, ProviderConfig, ProviderError, TextDelta
from agents.providers.factory import build_provider


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    message: str
    latency_ms: int | None = None


def provider_test_connection(*, provider: Provider) -> ConnectionResult:
    """One tiny real call to the provider's first model: latency, or what went wrong."""
    model = provider.models.filter(is_active=True).order_by("name").first()
    if model is None:
        return ConnectionResult(False, "no active model to call: add one first.")
    try:
        config = provider.config()
    except ValueError as error:
        return ConnectionResult(False, str(error))
    request = ModelRequest(
        model=model.name,
        messages=[{"role": "user", "content": "Reply with the single word: ok"}],
        max_output_tokens=5,
        temperature=0.0,
    )
    started = time.monotonic()
    try:
        text = async_to_sync(_reply)(config, request)
    except ProviderError as error:
        return ConnectionResult(False, f"{model.name} failed: {error.kind} ({error})")
    latency_ms = int((time.monotonic() - started) * 1000)
    return ConnectionResult(
        True, f"{model.name} answered in {latency_ms} ms: {text[:40]!r}", latency_ms
    )


async def _reply(config: ProviderConfig, request: ModelRequest) -> str:
    """The reply's text, from an adapter of its own (its client closed afterwards)."""
    adapter = build_provider(config)
    try:
        return "".join([e.text async for e in adapter.stream(request) if isinstance(e, TextDelta)])
    finally:
        if hasattr(adapter, "aclose"):
            await adapter.aclose()
