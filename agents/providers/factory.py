"""Build the provider adapter for a provider configuration."""

import threading

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


_shared: dict[ProviderConfig, Provider] = {}
_shared_mutex = threading.Lock()


def shared_provider(config: ProviderConfig) -> Provider:
    """One adapter (and so one SDK client and connection pool) per configuration and
    process. A changed configuration (a new key, URL or timeout) gets a new adapter."""
    with _shared_mutex:
        provider = _shared.get(config)
        if provider is None:
            provider = _shared[config] = build_provider(config)
        return provider
