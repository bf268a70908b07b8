"""The `openai` provider: OpenAI's Chat Completions API through the official SDK.

With a `base_url` it speaks to any OpenAI-compatible server (vLLM, Ollama, llama.cpp,
LM Studio, OpenRouter). The SDK's own retries are off (`max_retries=0`): the router's
retry loop owns retries, so every SDK failure becomes one classified ProviderError.

Usage semantics: `input_tokens` is the whole prompt as the server counted it (OpenAI's
`prompt_tokens`, cached tokens included); `cached_tokens` is the part of it served from
the prompt cache. When the server reports no usage, both counts are estimated (about
four characters a token) and `reported` is False.
"""

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping

import httpx2
import openai
from openai import AsyncOpenAI

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

# Servers word it differently: OpenAI ("maximum context length is …", code
# context_length_exceeded), vLLM (same wording), llama.cpp ("exceeds the available context
# size", exceed_context_size_error), Anthropic-style proxies ("prompt is too long").
CONTEXT_OVERFLOW_RE = re.compile(
    r"context[ _-]?(length|window|size)|exceed_context|prompt is too long|too many tokens",
    re.IGNORECASE,
)


def to_openai_messages(messages: list[dict]) -> list[dict]:
    converted = []
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            converted.append(
                {
                    "role": "assistant",
                    "content": message.get("content") or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": call["name"],
                                "arguments": _arguments_json(call),
                            },
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        elif role == "tool":
            converted.append(
                {
                    "role": "tool",
                    "tool_call_id": message["tool_call_id"],
                    "content": message.get("content") or "",
                }
            )
        else:
            converted.append({"role": role, "content": message.get("content") or ""})
    return converted


def _arguments_json(call: dict) -> str:
    arguments = call.get("arguments")
    if isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False)
    return call.get("raw_arguments") or "{}"


class OpenAIProvider(SDKProvider):
    """The `openai` provider (also any OpenAI-compatible server, through `base_url`)."""

    client_class = AsyncOpenAI

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        params: dict = {
            "model": request.model,
            "messages": to_openai_messages(request.messages),
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
        try:
            stream = await self._client.chat.completions.create(**params)
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from None

        output_chars = 0
        calls: dict[int, dict] = {}
        usage = None
        finish_reason = None
        try:
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices or ():
                        if choice.index != 0:
                            continue
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        delta = choice.delta
                        if delta is None:
                            continue
                        if delta.content:
                            output_chars += len(delta.content)
                            yield TextDelta(delta.content)
                        for fragment in delta.tool_calls or ():
                            self._collect(calls, fragment)
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from None
        except ValueError as exc:  # an event that is not JSON, or not a chunk
            raise ProviderError(
                "bad_response", f"openai: unreadable stream event ({type(exc).__name__})"
            ) from None
        if finish_reason is None and usage is None:
            # A close-delimited body can end without a protocol error: without [DONE], a
            # finish reason or the usage chunk, the answer was cut off.
            raise ProviderError("connection", "openai: the stream ended before the answer did")

        for index in sorted(calls):
            call = calls[index]
            raw = "".join(call["arguments"])
            output_chars += len(call["name"]) + len(raw)
            yield ToolCall(
                id=call["id"] or f"call_{uuid.uuid4().hex[:24]}",
                name=call["name"],
                arguments=parse_arguments(raw),
                raw_arguments=raw,
            )
        if usage is not None:
            details = usage.prompt_tokens_details
            yield Usage(
                input_tokens=usage.prompt_tokens or 0,
                output_tokens=usage.completion_tokens or 0,
                cached_tokens=(details.cached_tokens or 0) if details else 0,
                reported=True,
            )
        else:
            yield Usage(
                input_tokens=estimate_tokens(prompt_chars(request)),
                output_tokens=estimate_tokens(output_chars),
                reported=False,
            )
        yield Finish(finish_reason or "stop")

    @staticmethod
    def _collect(calls: dict[int, dict], fragment) -> None:
        call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": []})
        if fragment.id:
            call["id"] = fragment.id
        function = fragment.function
        if function is None:
            return
        if function.name and function.name != call["name"]:
            # The name normally arrives whole in the first fragment; some servers split it.
            call["name"] += function.name
        if function.arguments:
            call["arguments"].append(function.arguments)

    def _error(self, exc: Exception) -> ProviderError:
        key = self.config.api_key
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return ProviderError("timeout", "openai: the request timed out")
        if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError):
            cause = exc.__cause__ or exc
            return ProviderError(
                "connection", f"openai: connection failed ({type(cause).__name__})"
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return ProviderError(
                "bad_response", "openai: unexpected response shape", status=exc.status_code
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = redact(_server_message(exc), key)
            message = f"openai: HTTP {status}" + (f": {detail}" if detail else "")
            if exc.request_id:
                message += f" [request id {exc.request_id}]"
            retry_after = parse_retry_after(exc.response.headers)
            return ProviderError(
                _status_kind(status, exc), message, status=status, retry_after=retry_after
            )
        if isinstance(exc, openai.APIError):
            # An error event inside a 200 stream.
            detail = redact(_server_message(exc), key)
            kind = "context_overflow" if _is_context_overflow(exc) else "server"
            if kind == "server" and "rate_limit" in f"{exc.code} {exc.type}":
                kind = "rate_limited"
            return ProviderError(kind, f"openai: error in the stream: {detail}")
        return ProviderError("bad_response", f"openai: {type(exc).__name__}")


def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            code = exc.code or ""
            return f"{message} ({code})" if code else message
    if isinstance(body, str):
        return body
    return exc.message


def _is_context_overflow(exc: openai.APIError) -> bool:
    code = f"{exc.code or ''} {exc.type or ''}"
    return "context_length_exceeded" in code or bool(
        CONTEXT_OVERFLOW_RE.search(f"{code} {_server_message(exc)}")
    )


def _status_kind(status: int, exc: openai.APIStatusError) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server"
    if status in (400, 413, 422) and _is_context_overflow(exc):
        return "context_overflow"
    return "client"
