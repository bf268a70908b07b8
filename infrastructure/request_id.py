"""The request id: accepted from the client when well-formed, generated otherwise.

It is bound to structlog's contextvars so every log line of the request carries it, sent
along with Celery tasks as a message header, and attached to WebSocket scopes.
"""

import re
import uuid

import structlog

HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADER_KEY = HEADER.lower().encode()


def resolve_request_id(candidate: str | None) -> str:
    """Return `candidate` if it is 1-64 chars of [A-Za-z0-9_-], else a fresh id."""
    if candidate and VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def request_id_of(headers: dict[bytes, bytes]) -> str:
    """The request id for an ASGI request, from its headers (lower-case names)."""
    return resolve_request_id(headers.get(_HEADER_KEY, b"").decode("latin-1"))


def current_request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


def bind_request_id(request_id: str) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


class RequestIdASGIMiddleware:
    """Gives every WebSocket connection a request id (scope["request_id"]) and binds it
    for the consumer's log lines."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        request_id = request_id_of(dict(scope.get("headers") or []))
        bind_request_id(request_id)
        return await self.inner({**scope, "request_id": request_id}, receive, send)
