"""The anthropic adapter, driving the real SDK against a fake Messages server."""

import dataclasses
import math
import time

import pytest

from agents.providers.anthropic_provider import AnthropicProvider, to_anthropic
from agents.providers.base import (
    NO_REPEAT_INSTRUCTION,
    Finish,
    ModelRequest,
    ProviderConfig,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from tests.fakes import (
    DisconnectReply,
    ErrorReply,
    StreamErrorReply,
    TextReply,
    ToolCallReply,
    split,
)
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.llm_helpers import close, events_of, events_until_error

KEY = "sk-ant-test-SECRET-0123456789abcdef"
MODEL = "claude-test"
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
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def make_provider(server):
    providers = []

    def make(**overrides) -> AnthropicProvider:
        config = ProviderConfig(
            kind="anthropic",
            base_url=server.base_url,
            api_key=KEY,
            connect_timeout_s=1.0,
            read_timeout_s=2.0,
        )
        provider = AnthropicProvider(dataclasses.replace(config, **overrides))
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
    assert sent.path == "/v1/messages"
    # SDK 2.x: API version 2026-10-21, the key as a bearer token, no sampling parameters.
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.json == {
        "model": MODEL,
        "max_tokens": 256,
        "system": "You are a shop assistant.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "How much is shipping for order 42?"}],
            }
        ],
        "stream": True,
    }


def test_usage_counts_cached_prompt_tokens(server, provider):
    server.plan(
        TextReply(
            "Hi.", input_tokens=100, output_tokens=3, cached_tokens=1500, cache_creation_tokens=40
        )
    )

    usage = next(e for e in events_of(provider, request()) if isinstance(e, Usage))

    # input_tokens is the whole prompt, as with OpenAI; cached_tokens is its cached part.
    assert usage == Usage(input_tokens=1640, output_tokens=3, cached_tokens=1500, reported=True)


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


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("pause_turn", "pause_turn")],
)
def test_stop_reasons_are_normalized(server, provider, stop_reason, finish):
    server.plan(TextReply("Cut sh", finish_reason=stop_reason))

    assert events_of(provider, request())[-1] == Finish(finish)


def test_tool_call_round_trip(server, provider):
    server.plan(
        ToolCallReply(
            "quote_shipping",
            {"order_id": "42", "express": False},
            call_id="toolu_abc",
            text="Let me check.",
            chunks=4,
        ),
        TextReply("Shipping is 4.90 EUR."),
    )

    first = events_of(provider, request(tools=(QUOTE_TOOL,)))

    call = ToolCall(
        id="toolu_abc",
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
            "name": "quote_shipping",
            "description": "Quote the shipping cost of an order.",
            "input_schema": QUOTE_TOOL.parameters,
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
            "tool_call_id": "toolu_abc",
            "name": "quote_shipping",
            "content": '{"price": "4.90", "currency": "EUR"}',
        },
    ]
    second = events_of(provider, request(follow_up, tools=(QUOTE_TOOL,)))

    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "Shipping is 4.90 EUR."
    sent = server.requests[1].json
    assert sent["system"] == "You are a shop assistant."
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "How much is shipping for order 42?"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_abc",
                    "name": "quote_shipping",
                    "input": {"order_id": "42", "express": False},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_abc",
                    "content": '{"price": "4.90", "currency": "EUR"}',
                }
            ],
        },
    ]


def test_conversion_merges_consecutive_roles_and_joins_system_messages():
    system, messages = to_anthropic(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Ship order 1 and 2?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "toolu_1", "name": "quote_shipping", "arguments": {"order_id": "1"}},
                    {"id": "toolu_2", "name": "quote_shipping", "arguments": {"order_id": "2"}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "name": "quote_shipping", "content": "4"},
            {"role": "tool", "tool_call_id": "toolu_2", "name": "quote_shipping", "content": "5"},
            {"role": "user", "content": "And faster?"},
            {"role": "system", "content": NO_REPEAT_INSTRUCTION},
        ]
    )

    assert system == f"Be brief.\n\n{NO_REPEAT_INSTRUCTION}"
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Ship order 1 and 2?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "quote_shipping",
                    "input": {"order_id": "1"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "quote_shipping",
                    "input": {"order_id": "2"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "5"},
                {"type": "text", "text": "And faster?"},
            ],
        },
    ]


@pytest.mark.parametrize("raw", ['{"order_id": "42"', "[1, 2]", "not json"])
def test_malformed_tool_arguments_keep_the_raw_text(server, provider, raw):
    server.plan(ToolCallReply("quote_shipping", raw, call_id="toolu_bad"))

    calls = [
        e for e in events_of(provider, request(tools=(QUOTE_TOOL,))) if isinstance(e, ToolCall)
    ]

    assert calls == [
        ToolCall(id="toolu_bad", name="quote_shipping", arguments=None, raw_arguments=raw)
    ]


@pytest.mark.parametrize(
    ("reply", "kind", "retry_after"),
    [
        (ErrorReply(429, "Rate limited", headers={"Retry-After": "1"}), "rate_limited", 1.0),
        (ErrorReply(429, "Rate limited", headers={"retry-after-ms": "1500"}), "rate_limited", 1.5),
        (ErrorReply(500, "Internal server error"), "server", None),
        (ErrorReply(529, "Overloaded"), "server", None),
        (
            ErrorReply(400, "prompt is too long: 210000 tokens > 200000 maximum"),
            "context_overflow",
            None,
        ),
        (ErrorReply(400, "messages: Field required"), "client", None),
        (ErrorReply(413, "Request exceeds the maximum allowed size"), "client", None),
        (ErrorReply(401, "invalid x-api-key"), "auth", None),
        (ErrorReply(403, "Your API key does not have permission"), "auth", None),
        (ErrorReply(404, "model: claude-test"), "not_found", None),
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
    assert reply.message in str(error)
    assert server.calls == 1  # the SDK's own retries are off


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
        ("overloaded_error", "server"),
        ("api_error", "server"),
        ("rate_limit_error", "rate_limited"),
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


def test_the_api_key_never_shows(server, provider):
    assert KEY not in repr(provider.config)
    assert KEY not in repr(provider)
    server.plan(
        ErrorReply(401, f"invalid x-api-key {KEY} (Authorization: Bearer {KEY})"),
        DisconnectReply("Hello there", after_chunks=1),
    )

    _, auth_error = failure(provider)
    _, dropped = failure(provider)

    for error in (auth_error, dropped):
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert error.__cause__ is None
    assert auth_error.kind == "auth"
