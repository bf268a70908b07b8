import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import structlog
from django.core.cache import cache
from rest_framework.test import APIClient

from access.services import api_key_create
from infrastructure import cache_versions as versions
from tests.asgi_helpers import ApiTestClient
from tests.factories import user_create
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer


@pytest.fixture(autouse=True)
def _fresh_cache_and_log_context() -> Iterator[None]:
    # Throttle counters and shared versions live in the cache (Redis db 15 in tests); the
    # request id of a previous test must not leak into this one's log lines or task headers.
    cache.clear()
    versions.forget_reads()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def alice(db):
    return user_create("alice")


@pytest.fixture
def bob(db):
    return user_create("bob")


@pytest.fixture
def staff_user(db):
    return user_create("charlie", is_staff=True, groups=("viewers",))


@pytest.fixture
def operator(db):
    """Staff in the operators group: may manage their own API keys, no one else's."""
    return user_create("olivia", is_staff=True, groups=("operators",))


@pytest.fixture
def superuser(db):
    return user_create("root", is_staff=True, is_superuser=True)


@pytest.fixture
def api_key_for(db) -> Callable[..., str]:
    def create(user, *, name: str = "test", expires_at=None) -> str:
        _, raw_key = api_key_create(user=user, name=name, expires_at=expires_at)
        return raw_key

    return create


@pytest.fixture
def api_client() -> APIClient:
    return ApiTestClient()


@pytest.fixture
def alice_client(alice, api_key_for) -> APIClient:
    client = ApiTestClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(alice, name='alice-key')}")
    return client


def _project_log_handlers() -> set[logging.StreamHandler]:
    """The handlers settings.LOGGING configured: they render through structlog."""
    return {
        handler
        for logger in (logging.getLogger(), logging.getLogger("django"))
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
        and isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    }


@dataclass
class LogOutput:
    """What the project's own log handlers rendered while the test ran."""

    buffer: io.StringIO = field(default_factory=io.StringIO)
    _previous_streams: dict = field(default_factory=dict)

    def attach(self) -> None:
        """Send the project handlers' output here. Call again after something re-ran
        Django's logging set-up (a Celery worker does), which replaces the handlers."""
        handlers = _project_log_handlers()
        assert handlers, "settings.LOGGING configured no structlog handler"
        for handler in handlers:
            if handler.stream is not self.buffer:
                self._previous_streams[handler] = handler.setStream(self.buffer)

    def detach(self) -> None:
        for handler, stream in self._previous_streams.items():
            handler.setStream(stream)
        self._previous_streams.clear()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict]:
        """The rendered lines, parsed: LOG_FORMAT=json in tests."""
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, event: str) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == event]


@pytest.fixture
def log_output() -> Iterator[LogOutput]:
    """The log lines rendered by the project's handlers, formatter and all."""
    output = LogOutput()
    output.attach()
    try:
        yield output
    finally:
        output.detach()


# --- fake LLM provider servers (tests/fakes): real HTTP servers on 127.0.0.1 -------------------


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def server(request, openai_server, anthropic_server):
    """The fake server of the provider kind the test is parametrized with (indirect)."""
    return {"openai": openai_server, "anthropic": anthropic_server}[request.param]


@pytest.fixture
def fast_backoff(settings) -> None:
    """The router's retry backoff shortened, for tests that go through the turn path
    (whose router sleeps for real). A server's Retry-After is still honoured."""
    settings.LLM_RETRY_BACKOFF_S = 0.005
