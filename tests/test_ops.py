import socket
import threading
import time
from collections.abc import Iterator

import pytest
import yaml
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection

from infrastructure import cache_versions as versions
from tests.factories import api_key_make

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
HEALTHY_REQUIRED = {"status": "healthy", "required": True}


def _point_redis_at(settings, url: str) -> None:
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}
    }


def _without_latency(checks: dict) -> dict:
    return {
        name: {k: v for k, v in check.items() if k != "latency_ms"}
        for name, check in checks.items()
    }


@pytest.fixture
def unresponsive_server() -> Iterator[socket.socket]:
    """A TCP port that accepts connections (the kernel completes the handshake) and never
    answers: a hung Redis. Closing it resets every pending connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server
    finally:
        server.close()


# --- /health/ -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_answers_ok_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_health_answers_with_database_access_forbidden(client):
    # pytest-django raises on any database access in a test without the db mark
    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_answers_even_when_redis_is_down(client, settings):
    _point_redis_at(settings, CLOSED_PORT_URL)

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_takes_get_only(client):
    response = client.post("/health/")

    assert response.status_code == 405


# --- /ready/ ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ready_in_the_full_stack_reports_every_dependency_healthy(client):
    response = client.get("/ready/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert _without_latency(body["checks"]) == {
        "database": HEALTHY_REQUIRED,
        "redis": HEALTHY_REQUIRED,
        "channel_layer": HEALTHY_REQUIRED,
        "broker": HEALTHY_REQUIRED,
    }
    assert all(check["latency_ms"] >= 0 for check in body["checks"].values())


@pytest.mark.django_db
def test_ready_is_503_naming_redis_when_redis_is_down(client, settings):
    # given Redis, the broker and the channel layer on a closed port
    _point_redis_at(settings, CLOSED_PORT_URL)

    # when the probe runs
    started = time.monotonic()
    response = client.get("/ready/")
    elapsed = time.monotonic() - started

    # then it answers 503 within seconds, naming what fails
    assert response.status_code == 503
    assert elapsed < 3 * settings.READY_CHECK_TIMEOUT_SECONDS
    body = response.json()
    assert body["status"] == "not_ready"
    assert _without_latency(body["checks"]) == {
        "database": HEALTHY_REQUIRED,
        "redis": {"status": "failing", "required": True, "error": "ConnectionError"},
        "channel_layer": {"status": "failing", "required": True, "error": "ConnectionError"},
        "broker": {"status": "failing", "required": True, "error": "OperationalError"},
    }


@pytest.mark.django_db
@pytest.mark.slow
def test_ready_does_not_hang_on_a_redis_that_never_answers(client, settings, unresponsive_server):
    # given Redis, the broker and the channel layer on a server that accepts and never answers
    settings.READY_CHECK_TIMEOUT_SECONDS = 1.0
    _point_redis_at(settings, f"redis://127.0.0.1:{unresponsive_server.getsockname()[1]}/0")
    outcome: dict = {}

    def probe() -> None:
        started = time.monotonic()
        try:
            outcome["response"] = client.get("/ready/")
            outcome["elapsed"] = time.monotonic() - started
        finally:
            connection.close()

    # when the probe runs (in a thread, so that a hang fails the test instead of the run)
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout=20)
    # (closing the server resets its connections and so frees a probe that hung)
    unresponsive_server.close()
    thread.join(timeout=10)

    # then it answers 503 with every Redis-backed check failing within its timeout
    assert "response" in outcome, "/ready/ still had no answer after 20 s"
    response = outcome["response"]
    assert response.status_code == 503
    checks = response.json()["checks"]
    redis_backed = ("redis", "channel_layer", "broker")
    assert {name: checks[name]["status"] for name in redis_backed} == dict.fromkeys(
        redis_backed, "failing"
    )
    over_time = {
        name: checks[name]["latency_ms"]
        for name in redis_backed
        if checks[name]["latency_ms"] > 1500
    }
    assert over_time == {}
    assert outcome["elapsed"] < 5


# --- /metrics -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_count_requests_queries_and_cache_calls(client, alice):
    # given an API request, which reads the database (its key) and the cache (the keys'
    # version, read anew at least every tenth of a second)
    _, raw_key = api_key_make(alice)
    versions.forget_reads()
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {raw_key}").status_code == 200

    # when Prometheus scrapes
    response = client.get("/metrics")

    # then requests by method, database queries and cache calls are counted
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    metrics = response.content.decode()
    assert 'django_http_requests_total_by_method_total{method="GET"}' in metrics
    assert 'django_db_execute_total{alias="default",vendor="postgresql"}' in metrics
    assert 'django_cache_get_total{backend="redis"}' in metrics


# --- OpenAPI ------------------------------------------------------------------------------


@pytest.fixture
def schema(tmp_path) -> dict:
    """The schema generated by `spectacular --validate --fail-on-warn`: any warning fails."""
    schema_file = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema_file))
    return yaml.safe_load(schema_file.read_text())


def test_the_schema_generates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Orchestra API"
    assert "/api/v1/me/" in schema["paths"]


def test_the_schema_declares_the_bearer_scheme(schema):
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A per-user API key: `Authorization: Bearer orc_…`.",
    }
    assert {"bearerAuth": []} in schema["paths"]["/api/v1/me/"]["get"]["security"]


def test_the_schema_declares_the_error_body_on_every_operation(schema):
    schemas = schema["components"]["schemas"]
    assert schemas["Error"] == {
        "type": "object",
        "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
        "required": ["error"],
    }
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "details"}
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            # The event stream is not throttled: it answers no 429.
            throttled = not path.endswith("/events/")
            for status in ("401", "404", "429", "500") if throttled else ("401", "404", "500"):
                response = operation["responses"][status]
                assert response["content"]["application/json"]["schema"] == error_ref, (
                    path,
                    method,
                    status,
                )


@pytest.mark.django_db
def test_the_schema_and_the_docs_are_served(client):
    schema_response = client.get("/api/schema/")
    docs_response = client.get("/api/docs/")

    assert schema_response.status_code == 200
    assert "bearerAuth" in schema_response.content.decode()
    assert docs_response.status_code == 200
    assert "swagger-ui" in docs_response.content.decode()


# --- roles and admin ----------------------------------------------------------------------


@pytest.mark.django_db
def test_migrate_creates_the_staff_groups():
    names = set(Group.objects.values_list("name", flat=True))

    assert {"operators", "billing", "viewers"} <= names


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("group", "api_key_permissions"),
    [
        ("operators", {"add_apikey", "change_apikey", "view_apikey"}),
        ("billing", {"add_apikey", "change_apikey", "view_apikey"}),
        ("viewers", set()),
    ],
)
def test_each_group_holds_only_the_api_key_permissions_of_its_role(group, api_key_permissions):
    permissions = Group.objects.get(name=group).permissions.filter(
        content_type__app_label="orchestra"
    )

    assert set(permissions.values_list("codename", flat=True)) == api_key_permissions


def test_the_admin_index_is_branded_and_shows_service_health(client, superuser):
    client.force_login(superuser)

    response = client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Dashboard | Orchestra back-office</title>" in html
    assert "Orchestra back-office" in response.context["site_header"]
    widgets = {widget["title"]: widget for widget in response.context["dashboard_widgets"]}
    health = widgets["Service health"]
    assert health["link"] == "/ready/"
    rows = dict(health["rows"])
    assert rows["Mode"] == "full stack"
    dependencies = ("Database", "Redis", "Channel layer", "Broker")
    assert {label: rows[label].split(" ")[0] for label in dependencies} == dict.fromkeys(
        dependencies, "healthy"
    )
    assert "Service health" in html
    assert widgets["API access"]["rows"] == [("Usable API keys", 0)]


def test_the_service_health_widget_says_not_ready_when_redis_is_down(client, superuser, settings):
    _point_redis_at(settings, CLOSED_PORT_URL)
    client.force_login(superuser)

    response = client.get("/admin/")

    titles = [widget["title"] for widget in response.context["dashboard_widgets"]]
    assert "Service health — NOT READY" in titles


def test_a_viewer_sees_service_health_but_no_api_key_widget(client, staff_user):
    client.force_login(staff_user)

    response = client.get("/admin/")

    assert response.status_code == 200
    titles = [widget["title"] for widget in response.context["dashboard_widgets"]]
    assert "Service health" in titles
    assert "API access" not in titles


def test_a_user_who_is_not_staff_cannot_open_the_admin(client, alice):
    client.force_login(alice)

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/"
