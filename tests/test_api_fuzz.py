"""The API fuzzed against its own OpenAPI schema (schemathesis), on a live server.

Every operation of /api/schema/ gets generated requests, valid and not, with an API key;
each answer must be no server error, with a status, content type and body the schema
declares. Requests go to a real conversation and turn part of the time, so the
operations behind the 404 get fuzzed too. A fixed seed and a bounded number of examples
keep the run repeatable and short.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from django.db import connection
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.turn_helpers import TRANSACTIONAL, agent_make, conversation_make, submit

pytestmark = [TRANSACTIONAL, pytest.mark.slow]

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXAMPLES = 100  # per operation and mode: at most about 2,600 requests
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def live_server_url(tmp_path):
    """uvicorn on the test database, turns run by its own worker threads."""
    database = connection.settings_dict
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_ENV="test",
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
        f"/{database['NAME']}",
        LOCAL_MODEL_TOKEN_DELAY_MS="0",
        API_THROTTLE_USER="100000/minute",
        LOG_LEVEL="WARNING",
    )
    port = _free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "orchestra_site.asgi:application",
                "--port",
                str(port),
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"uvicorn did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def known(alice):
    """A conversation of alice's with a turn: real path parameters."""
    conversation = conversation_make(owner=alice, agent=agent_make("support", is_default=True))
    submit(conversation, "Where is my parcel?", "known-1")
    return {"conversation_id": str(conversation.pk), "number": 1}


def _cases(operation, mode: GenerationMode, known: dict):
    """Generated requests; for an operation with path parameters, half of them use the
    real ones."""
    generated = operation.as_strategy(mode)
    names = {parameter.name for parameter in operation.path_parameters}
    if not names:
        return generated
    real = {name: known[name] for name in names}
    return st.one_of(generated, operation.as_strategy(mode, path_parameters=real))


def test_no_input_breaks_the_api_or_its_schema(live_server_url, known, alice, api_key_for):
    schema = schemathesis.openapi.from_url(live_server_url + "/api/schema/?format=json")
    headers = {"Authorization": f"Bearer {api_key_for(alice)}"}
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=_cases(operation, mode, known))
            @hypothesis.settings(
                max_examples=EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def call(case):
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                call()
            except Exception as failure:  # noqa: BLE001 - every operation's failures, reported together
                failures.append(f"{operation.label} ({mode.value}): {failure}")

    assert len(operations) >= 10
    assert failures == []
