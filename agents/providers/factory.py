"""Build the provider adapter for a provider configuration."""

import asyncio
import threading
import weakref

from agents.providers.base import Provider, ProviderConfig

KINDS = ("openai", "anthropic", "local")


def build_provider(config: ProviderConfig) -> Provider:
    """The adapter for `config.kind`. Each adapter owns an SDK client with its own
    connection pool: build one per provider configuration and reuse it."""
    if config.kind == "openai":
        from agents.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(config)
    if config.kind == "anthropic":
        from agents.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider(config)
    if config.kind == "local":
        from agents.providers.local import LocalModel

        return LocalModel()  # needs no configuration
    raise ValueError(f"unknown provider kind {config.kind!r}; expected one of {KINDS}")


# event loop -> {configuration: adapter}: an async client's connections belong to one loop.
_shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_shared_mutex = threading.Lock()


def shared_provider(config: ProviderConfig) -> Provider:
    """One adapter (and so one SDK client and connection pool) per configuration, per
    event loop of the process: call it on the loop that streams. A changed configuration
    (a new key, URL or timeout) gets a new adapter."""
    loop = asyncio.get_running_loop()
    with _shared_mutex:
        adapters = _shared.setdefault(loop, {})
        provider = adapters.get(config)
        if provider is None:
            provider = adapters[config] = build_provider(config)
        return provider
