"""Fixtures of the turn-engine tests. Test modules load them with
`pytest_plugins = ["tests.turn_fixtures"]`; helpers are in tests/turn_helpers.py."""

import gc
from collections.abc import Callable, Iterator

import pytest
from celery.contrib.testing.worker import start_worker
from rest_framework.test import APIClient

from agents.models import Agent
from conversations.models import Conversation
from conversations.runner import turn_runner
from orchestra_site import celery_app
from tests.asgi_helpers import ApiTestClient
from tests.turn_helpers import agent_make, conversation_make


@pytest.fixture
def support_agent(db) -> Agent:
    """The default agent; anti-echo off so that only the echo tests see echoes."""
    return agent_make(
        "support",
        name="Customer support",
        description="Answers questions about orders.",
        is_default=True,
    )


@pytest.fixture
def conversation(alice, support_agent) -> Conversation:
    return conversation_make(owner=alice, agent=support_agent)


def _client_for(user, api_key_for) -> APIClient:
    client = ApiTestClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user, name='turn-tests')}")
    return client


@pytest.fixture
def bob_client(bob, api_key_for) -> APIClient:
    return _client_for(bob, api_key_for)


@pytest.fixture
def staff_client(staff_user, api_key_for) -> APIClient:
    return _client_for(staff_user, api_key_for)


@pytest.fixture
def local_model_delay(settings) -> Iterator[Callable[[int], None]]:
    """Call with milliseconds per word to make the built-in local model stream that slowly
    in this process (turns that take a while, to act on them mid-stream). The local model
    reads the setting at each call."""

    def set_delay(milliseconds: int) -> None:
        settings.LOCAL_MODEL_TOKEN_DELAY_MS = milliseconds

    yield set_delay


# --- workers ------------------------------------------------------------------------------------


@pytest.fixture
def threads_executor(settings) -> Iterator[None]:
    """Turns run as in the embedded mode: on this process's runner (conversations/runner.py).

    Use with tests.turn_helpers.TRANSACTIONAL: the runner's database work has its own
    connections and only sees committed rows.
    """
    settings.TURN_EXECUTOR = "local"
    try:
        yield
    finally:
        # No turn may still run when the test database is flushed.
        assert turn_runner().wait_idle(timeout=60)


@pytest.fixture
def celery_turn_worker(settings) -> Iterator[object]:
    """A real Celery worker (thread pool) in this process, on the Redis broker.

    Use with tests.turn_helpers.TRANSACTIONAL.
    """
    settings.TURN_EXECUTOR = "celery"
    with start_worker(
        celery_app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        yield worker
    assert turn_runner().wait_idle(timeout=60)
    gc.collect()
