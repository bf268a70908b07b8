"""Fixtures of the turn-engine tests. Test modules load them with
`pytest_plugins = ["tests.turn_fixtures"]`; helpers are in tests/turn_helpers.py."""

import gc
from collections.abc import Callable, Iterator

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connections
from rest_framework.test import APIClient

from agents.models import Agent, Provider
from agents.providers.factory import shared_provider
from conversations import dispatch
from conversations.models import Conversation
from orchestra_site import celery_app
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
    client = APIClient()
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
    in this process (turns that take a while, to act on them mid-stream).

    The router shares one local-model adapter per process, built from the setting the
    first time it is used: a settings override alone reaches only an adapter built later.
    """
    adapter = shared_provider(Provider.objects.get(name="local").config())
    original = adapter.token_delay_s

    def set_delay(milliseconds: int) -> None:
        settings.LOCAL_MODEL_TOKEN_DELAY_MS = milliseconds
        adapter.token_delay_s = milliseconds / 1000

    yield set_delay
    adapter.token_delay_s = original


# --- workers ------------------------------------------------------------------------------------


@pytest.fixture
def threads_executor(settings) -> Iterator[None]:
    """Turns run on the embedded mode's worker threads (conversations.dispatch.LocalWorker).

    Use with tests.turn_helpers.TRANSACTIONAL: the workers have their own database
    connections and only see committed rows.
    """
    settings.TURN_EXECUTOR = "threads"
    # The embedded recovery timer runs once when the pool starts; a long interval keeps it
    # from racing the tests' own turns_recover() calls afterwards.
    settings.CELERY_BEAT_SCHEDULE = {
        "recover-turns": {"task": "conversations.recover_turns", "schedule": 86400.0}
    }
    database = connections["default"].settings_dict
    max_age = database["CONN_MAX_AGE"]
    # Worker threads close their connection after each job (close_old_connections), so
    # none is left open when the test database is flushed or dropped.
    database["CONN_MAX_AGE"] = 0
    try:
        yield
    finally:
        worker = dispatch._local_worker
        if worker is not None:
            worker._pool.shutdown(wait=True)
            dispatch._local_worker = None
        database["CONN_MAX_AGE"] = max_age
        gc.collect()  # closes the connections of finished threads


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
    gc.collect()
