"""Helpers shared by the HTTP provider adapters."""

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping

import httpx2

from agents.providers.base import ModelRequest, ProviderConfig

MESSAGE_LIMIT = 300  # characters of the server's error message kept in ours


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / 4) if chars > 0 else 0


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return max(seconds, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_tz(value)
        if when is None:
            return None
        return max(float(email.utils.mktime_tz(when) - time.time()), 0.0)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def redact(text: str, secret: str) -> str:
    """`text` without the API key (and without anything that looks like a bearer token)."""
    if secret:
        text = text.replace(secret, "[redacted]")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1[redacted]", text)
    return text[:MESSAGE_LIMIT]


def parse_arguments(raw: str) -> dict | None:
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return arguments if isinstance(arguments, dict) else None


def prompt_chars(request: ModelRequest) -> int:
    """Characters of everything sent as the prompt, for estimating its tokens."""
    chars = sum(len(m.get("content") or "") for m in request.messages)
    for message in request.messages:
        for call in message.get("tool_calls") or ():
            chars += len(call.get("name", "")) + len(json.dumps(call.get("arguments") or {}))
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    return chars


class SDKProvider:
    """What the adapters over the official SDKs share: one async client per configuration
    (and event loop, which its connection pool belongs to), with the SDK's own retries off
    (the router's retry loop owns retries) and our timeouts."""

    client_class: type

    def __init__(self, config: ProviderConfig):
        self.config = config
        self._client = self.client_class(
            base_url=config.base_url or None,
            # Local servers often need no key, but the SDKs refuse to start without one;
            # an explicit key also stops them looking for credentials elsewhere.
            api_key=config.api_key or "not-needed",
            max_retries=0,
            timeout=httpx2.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_timeout_s,
                write=config.read_timeout_s,
                pool=config.connect_timeout_s,
            ),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.config.base_url!r})"

    async def aclose(self) -> None:
        await self._client.close()
