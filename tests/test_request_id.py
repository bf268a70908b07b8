import json
import queue
import re

import pytest
import redis
import structlog
from celery.contrib.testing.worker import start_worker
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from infrastructure.request_id import (
    RequestIdASGIMiddleware,
    bind_request_id,
    current_request_id,
)
from orchestra_site import celery_app

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
MALFORMED_IDS = ["a" * 65, "a b", "<script>", ""]

probe_results: queue.Queue = queue.Queue()
probe_log = structlog.get_logger("tests.request_id_probe")


@celery_app.task(name="tests.request_id_probe", bind=True)
def request_id_probe(self, label: str) -> None:
    probe_log.info("probe.ran", label=label)
    probe_results.put(
        {
            "label": label,
            "header": getattr(self.request, "request_id", None),
            "bound": current_request_id(),
        }
    )


def _broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


# --- HTTP ---------------------------------------------------------------------------------


def test_a_well_formed_request_id_is_echoed(client):
    # given a client that sends its own request id
    # when it calls the API
    response = client.get("/health/", HTTP_X_REQUEST_ID="Client-Trace_0042")

    # then the response carries the same id
    assert response.status_code == 200
    assert response["X-Request-ID"] == "Client-Trace_0042"


def test_a_request_id_of_64_characters_is_accepted(client):
    request_id = "x" * 64

    response = client.get("/health/", HTTP_X_REQUEST_ID=request_id)

    assert response["X-Request-ID"] == request_id


@pytest.mark.parametrize("malformed", MALFORMED_IDS, ids=["65-chars", "space", "html", "empty"])
def test_a_malformed_request_id_is_replaced_and_never_echoed(client, malformed):
    # given a request id that is too long, empty or has characters outside [A-Za-z0-9_-]
    # when it is sent
    response = client.get("/health/", HTTP_X_REQUEST_ID=malformed)

    # then a fresh 32-hex id is returned instead, and the bad one appears nowhere
    assert GENERATED_ID.fullmatch(response["X-Request-ID"])
    if malformed:
        assert malformed not in response["X-Request-ID"]
        assert malformed.encode() not in response.content


def test_a_request_without_id_gets_a_fresh_one_each_time(client):
    first = client.get("/health/")["X-Request-ID"]
    second = client.get("/health/")["X-Request-ID"]

    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status"),
    [("/health/", 200), ("/api/v1/no-such-endpoint/", 404), ("/api/v1/me/", 401)],
    ids=["health", "api-404", "api-401"],
)
def test_every_response_carries_the_request_id(client, path, status):
    response = client.get(path, HTTP_X_REQUEST_ID="trace-every-response")

    assert response.status_code == status
    assert response["X-Request-ID"] == "trace-every-response"


@pytest.mark.django_db
def test_the_request_id_is_on_every_log_line_of_the_request(client, log_output):
    # given a client sending its id to an endpoint that answers 401 (which Django also logs)
    # when the request is served
    response = client.get("/api/v1/me/", HTTP_X_REQUEST_ID="trace-in-logs")

    # then the access line and every other line of that request carry the id
    assert response.status_code == 401
    lines = log_output.lines()
    access = log_output.events("request.finished")
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("GET", "/api/v1/me/", 401)]
    assert len(lines) >= 2
    assert {line.get("request_id") for line in lines} == {"trace-in-logs"}


def test_a_generated_request_id_is_the_one_logged(client, log_output):
    response = client.get("/health/", HTTP_X_REQUEST_ID="<script>")

    [access] = log_output.events("request.finished")
    assert access["request_id"] == response["X-Request-ID"]
    assert "<script>" not in log_output.text


# --- Celery -------------------------------------------------------------------------------


def test_a_task_published_under_a_request_id_carries_it_as_a_header():
    # given a request id bound, as the middleware does during a request
    broker = _broker()
    broker.delete("celery")
    bind_request_id("trace-to-celery")

    # when a task is published
    request_id_probe.delay("header-only")

    # then the message on the broker has the request_id header
    try:
        [raw_message] = broker.lrange("celery", 0, -1)
        message = json.loads(raw_message)
        assert message["headers"]["task"] == "tests.request_id_probe"
        assert message["headers"]["request_id"] == "trace-to-celery"
    finally:
        broker.delete("celery")


def test_a_task_published_without_a_request_id_has_no_such_header():
    broker = _broker()
    broker.delete("celery")

    request_id_probe.delay("no-id")

    try:
        [raw_message] = broker.lrange("celery", 0, -1)
        assert "request_id" not in json.loads(raw_message)["headers"]
    finally:
        broker.delete("celery")


@pytest.mark.slow
def test_a_worker_runs_the_task_under_the_request_id_of_its_publisher(log_output):
    # given a real Celery worker on the Redis broker (start_worker sets the root logger to its
    # loglevel, "error" by default, which would silence the task's INFO line)
    _broker().delete("celery")
    with start_worker(
        celery_app, pool="solo", loglevel="INFO", perform_ping_check=False, shutdown_timeout=10
    ):
        # (starting the worker re-runs django.setup(), which replaces the log handlers)
        log_output.attach()
        # when a task is published while a request id is bound, and another without one
        bind_request_id("trace-through-worker")
        request_id_probe.delay("with-id")
        structlog.contextvars.clear_contextvars()
        request_id_probe.delay("without-id")
        results = [probe_results.get(timeout=20), probe_results.get(timeout=20)]

    # then the task sees the header and runs with the id bound for its log lines
    by_label = {result.pop("label"): result for result in results}
    assert by_label["with-id"] == {
        "header": "trace-through-worker",
        "bound": "trace-through-worker",
    }
    # and a task enqueued outside any request gets a fresh id of its own
    assert by_label["without-id"]["header"] is None
    assert GENERATED_ID.fullmatch(by_label["without-id"]["bound"])

    probe_lines = {line["label"]: line for line in log_output.events("probe.ran")}
    assert probe_lines["with-id"]["request_id"] == "trace-through-worker"
    assert probe_lines["with-id"]["task"] == "tests.request_id_probe"
    assert probe_lines["without-id"]["request_id"] == by_label["without-id"]["bound"]


# --- WebSocket ----------------------------------------------------------------------------


class RequestIdEchoConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send_json(
            {"scope_request_id": self.scope["request_id"], "bound": current_request_id()}
        )


def _communicator(headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    application = RequestIdASGIMiddleware(RequestIdEchoConsumer.as_asgi())
    return WebsocketCommunicator(application, "/ws/request-id/", headers=headers)


async def test_a_websocket_connection_gets_the_clients_request_id():
    # given a client that opens a socket with its own request id
    communicator = _communicator([(b"x-request-id", b"ws-trace-7")])

    # when it connects
    connected, _ = await communicator.connect()

    # then the consumer's scope holds it and it is bound for the consumer's log lines
    assert connected
    assert await communicator.receive_json_from() == {
        "scope_request_id": "ws-trace-7",
        "bound": "ws-trace-7",
    }
    await communicator.disconnect()


@pytest.mark.parametrize("malformed", MALFORMED_IDS, ids=["65-chars", "space", "html", "empty"])
async def test_a_websocket_with_a_malformed_request_id_gets_a_generated_one(malformed):
    communicator = _communicator([(b"x-request-id", malformed.encode())])

    connected, _ = await communicator.connect()

    assert connected
    message = await communicator.receive_json_from()
    assert GENERATED_ID.fullmatch(message["scope_request_id"])
    assert message["bound"] == message["scope_request_id"]
    await communicator.disconnect()


async def test_a_websocket_without_request_id_gets_a_generated_one():
    communicator = _communicator([])

    connected, _ = await communicator.connect()

    assert connected
    message = await communicator.receive_json_from()
    assert GENERATED_ID.fullmatch(message["scope_request_id"])
    await communicator.disconnect()
