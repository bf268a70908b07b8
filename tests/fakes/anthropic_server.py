"""A fake Anthropic Messages server: POST /v1/messages, streamed as named SSE events
(message_start, content_block_start, content_block_delta, content_block_stop,
message_delta, message_stop, with a ping). Like API version 2026-10-21 it requires
max_tokens and rejects sampling parameters."""

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

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def event(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


class FakeAnthropicServer(FakeServer):
    path = "/v1/messages"

    def validate(self, body: dict | None) -> ErrorReply | None:
        if not isinstance(body, dict):
            return ErrorReply(400, "body must be a JSON object")
        for name in ("model", "messages", "max_tokens"):
            if name not in body:
                return ErrorReply(400, f"{name}: Field required")
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                return ErrorReply(400, f"{name}: Extra inputs are not permitted")
        if body.get("stream") is not True:
            return ErrorReply(400, "this fake only streams")
        return None

    def error_body(self, reply: ErrorReply) -> dict:
        error_type = reply.code or ERROR_TYPES.get(reply.status, "api_error")
        return {
            "type": "error",
            "error": {"type": error_type, "message": reply.message},
            "request_id": "req_fake",
        }

    def render(self, reply: Reply, body: dict):
        usage = {
            "input_tokens": getattr(reply, "input_tokens", 0),
            "output_tokens": 1,
            "cache_read_input_tokens": getattr(reply, "cached_tokens", 0),
            "cache_creation_input_tokens": getattr(reply, "cache_creation_tokens", 0),
        }
        if not getattr(reply, "usage", True):
            usage = None
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake-model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if usage is not None:
            message["usage"] = usage
        yield event("message_start", {"type": "message_start", "message": message}), False

        index = 0
        pieces = split(reply.text, reply.chunks)
        if pieces:
            yield (
                event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                False,
            )
            yield event("ping", {"type": "ping"}), False
            for piece in pieces:
                delta = {"type": "text_delta", "text": piece}
                payload = {"type": "content_block_delta", "index": index, "delta": delta}
                yield event("content_block_delta", payload), True
            if isinstance(reply, DisconnectReply):
                return  # the server cuts the connection before getting here
            if isinstance(reply, StreamErrorReply):
                error = {"type": reply.code or "api_error", "message": reply.message}
                yield event("error", {"type": "error", "error": error}), False
                return
            yield event("content_block_stop", {"type": "content_block_stop", "index": index}), False
            index += 1

        stop_reason = "end_turn"
        if isinstance(reply, ToolCallReply):
            stop_reason = "tool_use"
            for call_id, name, arguments in reply.all_calls("toolu_"):
                block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
                payload = {"type": "content_block_start", "index": index, "content_block": block}
                yield event("content_block_start", payload), False
                for fragment in split(arguments, reply.chunks):
                    delta = {"type": "input_json_delta", "partial_json": fragment}
                    payload = {"type": "content_block_delta", "index": index, "delta": delta}
                    yield event("content_block_delta", payload), True
                stop = {"type": "content_block_stop", "index": index}
                yield event("content_block_stop", stop), False
                index += 1
        elif isinstance(reply, TextReply) and reply.finish_reason:
            stop_reason = reply.finish_reason

        delta_payload: dict = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        }
        if usage is not None:
            delta_payload["usage"] = {"output_tokens": reply.output_tokens}
        yield event("message_delta", delta_payload), False
        yield event("message_stop", {"type": "message_stop"}), False
