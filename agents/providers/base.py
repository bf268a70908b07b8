"""The one streaming interface every provider adapter speaks.

A provider turns a ModelRequest into an async iterator of stream events: text deltas as
they arrive, then the usage, then the finish reason. A model call is I/O, so it runs on an
event loop: a process keeps hundreds in flight without a thread each. Callers never see
provider SDK types.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

# Appended as a system message when anti-echo asks for a second answer.
NO_REPEAT_INSTRUCTION = (
    "Your previous reply repeated an earlier reply of this conversation. "
    "Answer the last message again without repeating yourself."
)


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does, and a JSON schema of its
    arguments (an object schema)."""

    name: str
    description: str
    parameters: dict


@dataclass(frozen=True)
class ModelRequest:
    """What to ask a model, in a provider-neutral shape.

    messages: {"role": "system"|"user"|"assistant"|"tool", "content": str}; an assistant
    message may carry "tool_calls": [{"id", "name", "arguments": dict}], and a tool
    message carries "tool_call_id" and "name" (the tool's result is its content).
    """

    model: str
    messages: list[dict]
    max_output_tokens: int = 1024
    temperature: float = 0.2
    tools: tuple[ToolSpec, ...] = ()

    @property
    def last_user_text(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def system_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] == "system")

    @property
    def asks_not_to_repeat(self) -> bool:
        return any(
            m["role"] == "system" and m["content"] == NO_REPEAT_INSTRUCTION for m in self.messages
        )


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool. `arguments` is None when the model sent arguments that
    are not a JSON object; `raw_arguments` keeps what it sent."""

    id: str
    name: str
    arguments: dict | None
    raw_arguments: str = ""


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reported: bool = True  # False when estimated because the provider gave no usage


@dataclass(frozen=True)
class Finish:
    reason: str = "stop"


StreamEvent = TextDelta | ToolCall | Usage | Finish


class StreamAborted(Exception):
    """The caller stopped reading a stream (its turn was cancelled): no fault of the model."""


class CallbackError(Exception):
    """Our own code failed while a model was answering (publishing a delta, say): not
    the model's fault, so neither a retry nor a breaker failure."""


class ProviderError(Exception):
    """A failed model call, classified for the retry loop and the fallback chain.

    kind: timeout | connection | rate_limited | server | client | auth | not_found |
    context_overflow | bad_response. Only timeouts, connection errors, 429 and 5xx are
    retried; `retry_after` carries the server's Retry-After in seconds when it sent one.
    """

    RETRYABLE_KINDS = frozenset({"timeout", "connection", "rate_limited", "server"})

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE_KINDS


@dataclass(frozen=True)
class ProviderConfig:
    """How to reach a provider. The API key is already decrypted; never log it."""

    kind: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0


class Provider(Protocol):
    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Yield TextDelta / ToolCall events as they arrive, then Usage, then Finish.
        Raise ProviderError on failure (possibly after some events were yielded)."""
