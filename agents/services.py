"""Writes and checks of the agents app."""

import time
from dataclasses import dataclass

from agents.models import Provider
from agents.providers.base import ModelRequest, ProviderError, TextDelta
from agents.providers.factory import shared_provider


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
        adapter = shared_provider(provider.config())
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
        text = "".join(e.text for e in adapter.stream(request) if isinstance(e, TextDelta))
    except ProviderError as error:
        return ConnectionResult(False, f"{model.name} failed: {error.kind} ({error})")
    latency_ms = int((time.monotonic() - started) * 1000)
    return ConnectionResult(
        True, f"{model.name} answered in {latency_ms} ms: {text[:40]!r}", latency_ms
    )
