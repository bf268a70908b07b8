"""The `anthropic` provider: Anthropic's Messages API through the official SDK.

The SDK (2.x) speaks API version 2026-10-21: it sends the key as `Authorization: Bearer`,
and sampling parameters (temperature, top_p, top_k) no longer exist, so
`ModelRequest.temperature` is not sent. The SDK's own retries are off (`max_retries=0`):
the router's retry loop owns retries.

Usage semantics match the openai provider: `input_tokens` is the whole prompt
(`input_tokens + cache_creation_input_tokens + cache_read_input_tokens`), and
`cached_tokens` the part read from the prompt cache.
"""

import re
from collections.abc import AsyncIterator

import anthropic
import httpx2
from anthropic import AsyncAnthropic

from agents.providers.base import (
    Finish,
    ModelRequest,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
)
from agents.providers.common import (
    SDKProvider,
    estimate_tokens,
    parse_arguments,
    parse_retry_after,
    prompt_chars,
    redact,
)

CONTEXT_OVERFLOW_RE = re.compile(
    r"prompt is too long|context[ _-]?(length|window|size)|too many tokens", re.IGNORECASE
)
# The neutral finish reasons are OpenAI's; unknown reasons pass through unchanged.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types of an `error` event inside a 200 stream.
STREAM_ERROR_KINDS = {
    "overloaded_error": "server",
    "api_error": "server",
    "rate_limit_error": "rate_limited",
    "timeout_error": "timeout",
    "authentication_error": "auth",
    "permission_error": "auth",
    "not_found_error": "not_found",
    "invalid_request_error": "client",
}


def to_anthropic(messages: list[dict]) -> tuple[str, list[dict]]:
    """(system prompt, messages): system messages joined into the system prompt, tool
    results as `tool_result` blocks of a user message, consecutive same-role messages
    merged into one."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    converted: list[dict] = []
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "system":
            continue
        if role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message["tool_call_id"],
                    "content": content,
                }
            ]
        else:
            # Anthropic rejects empty text blocks.
            blocks = [{"type": "text", "text": content}] if content else []
            if role == "assistant":
                blocks += [
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["name"],
                        "input": call["arguments"]
                        if isinstance(call.get("arguments"), dict)
                        else {},
                    }
                    for call in message.get("tool_calls") or ()
                ]
        if not blocks:
            continue
        if converted and converted[-1]["role"] == role:
            converted[-1]["content"].extend(blocks)
        else:
            converted.append({"role": role, "content": blocks})
    return system, converted


class AnthropicProvider(SDKProvider):
    """The `anthropic` provider. `base_url` is the API root (no `/v1`)."""

    client_class = AsyncAnthropic

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        system, messages = to_anthropic(request.messages)
        params: dict = {
            "model": request.model,
            "max_tokens": request.max_output_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        try:
            stream = await self._client.messages.create(**params)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise self._error(exc) from None

        input_tokens = cache_read = cache_creation = output_tokens = 0
        usage_seen = stopped = False
        stop_reason = None
        output_chars = 0
        tool_blocks: dict[int, dict] = {}
        try:
            async with stream:
                async for event in stream:
                    kind = getattr(event, "type", None)
                    if kind == "message_start":
                        usage = getattr(event.message, "usage", None)
                        if usage is not None:
                            usage_seen = True
                            input_tokens = usage.input_tokens or 0
                            cache_read = usage.cache_read_input_tokens or 0
                            cache_creation = usage.cache_creation_input_tokens or 0
                            output_tokens = usage.output_tokens or 0
                    elif kind == "content_block_start":
                        block = event.content_block
                        if getattr(block, "type", None) == "tool_use":
                            tool_blocks[event.index] = {
                                "id": block.id,
                                "name": block.name,
                                "json": [],
                            }
                    elif kind == "content_block_delta":
                        delta = event.delta
                        delta_type = getattr(delta, "type", None)
                        if delta_type == "text_delta" and delta.text:
                            output_chars += len(delta.text)
                            yield TextDelta(delta.text)
                        elif delta_type == "input_json_delta" and event.index in tool_blocks:
                            tool_blocks[event.index]["json"].append(delta.partial_json)
                    elif kind == "content_block_stop":
                        block = tool_blocks.pop(event.index, None)
                        if block is not None:
                            raw = "".join(block["json"])
                            output_chars += len(block["name"]) + len(raw)
                            yield ToolCall(
                                id=block["id"],
                                name=block["name"],
                                arguments=parse_arguments(raw),
                                raw_arguments=raw,
                            )
                    elif kind == "message_delta":
                        if event.delta.stop_reason:
                            stop_reason = event.delta.stop_reason
                        usage = getattr(event, "usage", None)
                        if usage is not None:
                            # Counts in message_delta are cumulative.
                            usage_seen = True
                            output_tokens = usage.output_tokens or output_tokens
                            if usage.input_tokens is not None:
                                input_tokens = usage.input_tokens
                            if usage.cache_read_input_tokens is not None:
                                cache_read = usage.cache_read_input_tokens
                            if usage.cache_creation_input_tokens is not None:
                                cache_creation = usage.cache_creation_input_tokens
                    elif kind == "message_stop":
                        stopped = True
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise self._error(exc) from None
        except ValueError as exc:  # an event that is not JSON
            raise ProviderError(
                "bad_response", f"anthropic: unreadable stream event ({type(exc).__name__})"
            ) from None
        if not stopped:
            raise ProviderError("connection", "anthropic: the stream ended before message_stop")

        if usage_seen:
            yield Usage(
                input_tokens=input_tokens + cache_read + cache_creation,
                output_tokens=output_tokens,
                cached_tokens=cache_read,
                reported=True,
            )
        else:
            yield Usage(
                input_tokens=estimate_tokens(prompt_chars(request)),
                output_tokens=estimate_tokens(output_chars),
                reported=False,
            )
        reason = stop_reason or "end_turn"
        yield Finish(FINISH_REASONS.get(reason, reason))

    def _error(self, exc: Exception) -> ProviderError:
        key = self.config.api_key
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return ProviderError("timeout", "anthropic: the request timed out")
        if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError):
            cause = exc.__cause__ or exc
            return ProviderError(
                "connection", f"anthropic: connection failed ({type(cause).__name__})"
            )
        if isinstance(exc, anthropic.APIResponseValidationError):
            return ProviderError(
                "bad_response", "anthropic: unexpected response shape", status=exc.status_code
            )
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            error_type = exc.type or ""
            detail = redact(_server_message(exc), key)
            if status < 400:
                # An `error` event inside a 200 stream.
                kind = STREAM_ERROR_KINDS.get(error_type, "server")
                if kind == "client" and CONTEXT_OVERFLOW_RE.search(detail):
                    kind = "context_overflow"
                return ProviderError(kind, f"anthropic: error in the stream: {detail}")
            message = f"anthropic: HTTP {status}" + (f": {detail}" if detail else "")
            if exc.request_id:
                message += f" [request id {exc.request_id}]"
            return ProviderError(
                _status_kind(status, detail),
                message,
                status=status,
                retry_after=parse_retry_after(exc.response.headers),
            )
        if isinstance(exc, anthropic.APIError):
            return ProviderError("server", f"anthropic: {redact(exc.message, key)}")
        return ProviderError("bad_response", f"anthropic: {type(exc).__name__}")


def _server_message(exc: anthropic.APIStatusError) -> str:
    message = exc.api_message
    error_type = exc.type or ""
    if isinstance(message, str) and message:
        return f"{message} ({error_type})" if error_type else message
    return exc.message


def _status_kind(status: int, detail: str) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500:  # 529 overloaded included
        return "server"
    if status in (400, 413) and CONTEXT_OVERFLOW_RE.search(detail):
        return "context_overflow"
    return "client"
