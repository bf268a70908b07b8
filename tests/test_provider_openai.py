"""The openai adapter, driving the real SDK against a fake Chat Completions server."""

import dataclasses
import email.utils
import math
import socket
import time

import pytest

from agents.providers.anthropic_provider import AnthropicProvider
from agents.providers.base import (
    Finish,
    ModelRequest,
    ProviderConfig,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from agents.providers.factory import build_provider
from agents.providers.local import LocalModel
from agents.providers.openai_provider import OpenAIProvider, parse_retry_after
from tests.fakes import (
    DisconnectReply,
    ErrorReply,
    StreamErrorReply,
    TextReply,
    ToolCallReply,
    split,
)
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm_helpers import close, events_of, events_until_error

KEY = "sk-test-SECRET-0123456789abcdef"
MODEL = "gpt-test"
QUOTE_TOOL = ToolSpec(
    name="quote_shipping",
    description="Quote the shipping cost of an order.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "express": {"type": "boolean"}},
        "required": ["order_id"],
    },
)
MESSAGES = [
    {"role": "system", "content": "You are a shop assistant."},
    {"role": "user", "content": "How much is shipping for order 42?"},
]


@pytest.fixture
def server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def make_provider(server):
    providers = []

    def make(**overrides) -> OpenAIProvider:
        config = ProviderConfig(
            kind="openai",
            base_url=server.base_url,
            api_key=KEY,
            connect_timeout_s=1.0,
            read_timeout_s=2.0,
        )
        provider = OpenAIProvider(dataclasses.replace(config, **overrides))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        close(provider)


@pytest.fixture
def provider(make_provider):
    return make_provider()


def request(messages=None, **kwargs) -> ModelRequest:
    return ModelRequest(model=MODEL, messages=messages or MESSAGES, **kwargs)


def failure(provider, req=None) -> tuple[list, ProviderError]:
    events, error = events_until_error(provider, req or request())
    assert isinstance(error, ProviderError), error
    return events, error


def test_streams_text_deltas_in_order_then_usage_then_finish(server, provider):
    reply = "Shipping for order 42 is 4.90 EUR, delivered in two days."
    server.plan(TextReply(reply, chunks=5, input_tokens=31, output_tokens=14))

    events = events_of(provider, request(max_output_tokens=256, temperature=0.3))

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == split(reply, 5)
    assert "".join(deltas) == reply
    assert events[len(deltas) :] == [
        Usage(input_tokens=31, output_tokens=14, cached_tokens=0, reported=True),
        Finish("stop"),
    ]
    sent = server.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 256,
        "temperature": 0.3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert server.calls == 1


def test_cached_prompt_tokens_are_reported(server, provider):
    server.plan(TextReply("Hi.", input_tokens=2000, output_tokens=3, cached_tokens=1536))

    usage = next(e for e in events_of(provider, request()) if isinstance(e, Usage))

    assert usage == Usage(input_tokens=2000, output_tokens=3, cached_tokens=1536, reported=True)


def test_usage_is_estimated_when_the_server_sends_none(server, provider):
    reply = "Four point ninety."
    server.plan(TextReply(reply, usage=False))

    events = events_of(provider, request())

    prompt_chars = sum(len(m["content"]) for m in MESSAGES)
    assert events[-2] == Usage(
        input_tokens=math.ceil(prompt_chars / 4),
        output_tokens=math.ceil(len(reply) / 4),
        reported=False,
    )
    assert events[-1] == Finish("stop")


def test_finish_reason_is_passed_on(server, provider):
    server.plan(TextReply("Cut sh", finish_reason="length"))

    assert events_of(provider, request())[-1] == Finish("length")


def test_tool_call_round_trip(server, provider):
    server.plan(
        ToolCallReply(
            "quote_shipping",
            {"order_id": "42", "express": False},
            call_id="call_abc",
            text="Let me check.",
            chunks=4,
        ),
        TextReply("Shipping is 4.90 EUR."),
    )

    first = events_of(provider, request(tools=(QUOTE_TOOL,)))

    call = ToolCall(
        id="call_abc",
        name="quote_shipping",
        arguments={"order_id": "42", "express": False},
        raw_arguments='{"order_id": "42", "express": false}',
    )
    assert first == [
        *[TextDelta(piece) for piece in split("Let me check.", 4)],
        call,
        Usage(input_tokens=20, output_tokens=9, reported=True),
        Finish("tool_calls"),
    ]
    assert server.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "quote_shipping",
                "description": "Quote the shipping cost of an order.",
                "parameters": QUOTE_TOOL.parameters,
            },
        }
    ]

    follow_up = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"id": call.id, "name": call.name, "arguments": call.arguments}],
        },
        {
            "role": "tool",
            "tool_call_id": "call_abc",
            "name": "quote_shipping",
            "content": '{"price": "4.90", "currency": "EUR"}',
        },
    ]
    second = events_of(provider, request(follow_up, tools=(QUOTE_TOOL,)))

    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "Shipping is 4.90 EUR."
    assert server.requests[1].json["messages"] == [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "How much is shipping for order 42?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {
                        "name": "quote_shipping",
                        "arguments": '{"order_id": "42", "express": false}',
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_abc",
            "content": '{"price": "4.90", "currency": "EUR"}',
        },
    ]


def test_parallel_tool_calls_are_assembled_by_index(server, provider):
    server.plan(
        ToolCallReply(
            "quote_shipping",
            {"order_id": "1"},
            call_id="call_1",
            more=(("quote_shipping", {"order_id": "2", "express": True}, "call_2"),),
            chunks=3,
        )
    )

    calls = [
        e for e in events_of(provider, request(tools=(QUOTE_TOOL,))) if isinstance(e, ToolCall)
    ]

    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_1", "quote_shipping", {"order_id": "1"}),
        ("call_2", "quote_shipping", {"order_id": "2", "express": True}),
    ]


@pytest.mark.parametrize("raw", ['{"order_id": "42"', "[1, 2]", "not json"])
def test_malformed_tool_arguments_keep_the_raw_text(server, provider, raw):
    server.plan(ToolCallReply("quote_shipping", raw, call_id="call_bad"))

    calls = [
        e for e in events_of(provider, request(tools=(QUOTE_TOOL,))) if isinstance(e, ToolCall)
    ]

    assert calls == [
        ToolCall(id="call_bad", name="quote_shipping", arguments=None, raw_arguments=raw)
    ]


@pytest.mark.parametrize(
    ("reply", "kind", "retry_after"),
    [
        (ErrorReply(429, "Rate limit reached", headers={"Retry-After": "1"}), "rate_limited", 1.0),
        (ErrorReply(429, "Slow down", headers={"retry-after-ms": "250"}), "rate_limited", 0.25),
        (ErrorReply(500, "The server had an error"), "server", None),
        (ErrorReply(503, "Overloaded", headers={"Retry-After": "2"}), "server", 2.0),
        (
            ErrorReply(
                400,
                "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens.",
                code="context_length_exceeded",
            ),
            "context_overflow",
            None,
        ),
        (
            ErrorReply(400, "the request exceeds the available context size, try increasing it"),
            "context_overflow",
            None,
        ),
        (ErrorReply(400, "Invalid value for 'temperature'"), "client", None),
        (ErrorReply(422, "Unprocessable"), "client", None),
        (ErrorReply(401, "Invalid API key"), "auth", None),
        (ErrorReply(403, "Forbidden"), "auth", None),
        (ErrorReply(404, "The model `gpt-test` does not exist"), "not_found", None),
    ],
)
def test_http_errors_map_to_provider_error_kinds(server, provider, reply, kind, retry_after):
    server.plan(reply)

    events, error = failure(provider)

    assert events == []
    assert error.kind == kind
    assert error.status == reply.status
    assert error.retry_after == retry_after
    assert error.retryable == (kind in {"rate_limited", "server"})
    assert reply.message[:50] in str(error)
    assert server.calls == 1  # the SDK's own retries are off


def test_retry_after_as_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": when}) <= 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_disconnect_mid_stream_raises_connection_after_the_first_deltas(server, provider):
    reply = "One two three four five six"
    server.plan(DisconnectReply(reply, after_chunks=2, chunks=6))

    events, error = failure(provider)

    assert events == [TextDelta(piece) for piece in split(reply, 6)[:2]]
    assert error.kind == "connection"
    assert error.retryable


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (None, "server"),
        ("rate_limit_exceeded", "rate_limited"),
        ("context_length_exceeded", "context_overflow"),
    ],
)
def test_an_error_event_inside_the_stream(server, provider, code, kind):
    server.plan(StreamErrorReply("Hello there", message="Something broke", code=code, chunks=2))

    events, error = failure(provider)

    assert events == [TextDelta(piece) for piece in split("Hello there", 2)]
    assert error.kind == kind
    assert "Something broke" in str(error)


def test_a_stream_that_stops_before_the_end_is_a_connection_error(server, provider):
    server.plan(DisconnectReply("One two three four", after_chunks=2, chunks=4, clean=True))

    events, error = failure(provider)

    assert events == [TextDelta(piece) for piece in split("One two three four", 4)[:2]]
    assert error.kind == "connection"


def test_a_server_slower_than_the_read_timeout_times_out(server, make_provider):
    provider = make_provider(read_timeout_s=0.3)
    server.plan(TextReply("Too late.", delay=1.5))

    started = time.monotonic()
    events, error = failure(provider)

    assert time.monotonic() - started < 1.0
    assert events == []
    assert error.kind == "timeout"
    assert error.retryable


def test_nothing_listening_is_a_connection_error(make_provider):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make_provider(base_url=f"http://127.0.0.1:{port}/v1")

    _, error = failure(provider)

    assert error.kind == "connection"


def test_the_api_key_never_shows(server, provider):
    config = provider.config
    assert KEY not in repr(config)
    assert KEY not in repr(provider)
    server.plan(
        ErrorReply(401, f"Incorrect API key provided: {KEY}. Header was 'Bearer {KEY}'."),
        DisconnectReply("Hello there", after_chunks=1),
    )

    _, auth_error = failure(provider)
    _, dropped = failure(provider)

    for error in (auth_error, dropped):
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert error.__cause__ is None
    assert auth_error.kind == "auth"
    assert "[redacted]" in str(auth_error)


def test_build_provider_maps_kinds():
    openai_provider = build_provider(
        ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1")
    )
    anthropic_provider = build_provider(ProviderConfig(kind="anthropic", api_key="x"))
    try:
        assert isinstance(openai_provider, OpenAIProvider)
        assert isinstance(anthropic_provider, AnthropicProvider)
    finally:
        close(openai_provider)
        close(anthropic_provider)
    assert isinstance(build_provider(ProviderConfig(kind="local")), LocalModel)
    with pytest.raises(ValueError, match="unknown provider kind"):
        build_provider(ProviderConfig(kind="gemini"))
