"""A fake OpenAI Chat Completions server: POST /v1/chat/completions, streamed as
`data: {chunk}` events ending with `data: [DONE]`, plus a usage chunk when the request
asks for it (`stream_options.include_usage`)."""

import json

from tests.fakes import (
    DisconnectReply,
    ErrorReply,
    FakeServer,
    Reply,
    StreamErrorReply,
    TextReply,
    ToolCallReply,
    split,
)


class FakeOpenAIServer(FakeServer):
    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def validate(self, body: dict | None) -> ErrorReply | None:
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return ErrorReply(400, "model and messages are required", "invalid_request_error")
        if body.get("stream") is not True:
            return ErrorReply(400, "this fake only streams", "invalid_request_error")
        return None

    def error_body(self, reply: ErrorReply) -> dict:
        return {
            "error": {
                "message": reply.message,
                "type": "invalid_request_error" if reply.status < 500 else "server_error",
                "param": None,
                "code": reply.code,
            }
        }

    def render(self, reply: Reply, body: dict):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        model = body.get("model", "fake-model")

        def chunk(delta: dict | None, finish_reason=None, usage=None, choices=True) -> bytes:
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": (
                    [
                        {
                            "index": 0,
                            "delta": delta,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ]
                    if choices
                    else []
                ),
            }
            if include_usage:
                payload["usage"] = usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": ""}), False
        text = reply.text
        for piece in split(text, reply.chunks):
            yield chunk({"content": piece}), True
        if isinstance(reply, DisconnectReply):
            return  # the server cuts the connection before getting here
        if isinstance(reply, StreamErrorReply):
            error = {"message": reply.message, "type": "server_error", "code": reply.code}
            yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n", False
            return

        finish_reason = "stop"
        if isinstance(reply, ToolCallReply):
            finish_reason = "tool_calls"
            for index, (call_id, name, arguments) in enumerate(reply.all_calls("call_")):
                first = {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                yield chunk({"tool_calls": [first]}), False
                for fragment in split(arguments, reply.chunks):
                    delta = {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
                    yield chunk(delta), True
        elif isinstance(reply, TextReply) and reply.finish_reason:
            finish_reason = reply.finish_reason
        yield chunk({}, finish_reason), False
        if include_usage and reply.usage:
            usage = {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
                "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": 0},
            }
            yield chunk(None, usage=usage, choices=False), False
        yield b"data: [DONE]\n\n", False
