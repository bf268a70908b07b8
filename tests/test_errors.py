"""Every API error has the docs/api.md shape: {"error": {"code", "message", "details"}}."""

import json

import pytest
from django.shortcuts import get_object_or_404
from django.urls import path
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes, throttle_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle

from access.models import ApiKey
from orchestra_site.urls import urlpatterns as site_urlpatterns
from tests.factories import api_key_make

INTERNAL = {
    "error": {
        "code": "internal",
        "message": "Internal error. Quote the X-Request-ID when reporting it.",
        "details": {},
    }
}
NOT_FOUND = {"error": {"code": "not_found", "message": "Not found.", "details": {}}}
CRASH_TEXT = "kaboom: the flux capacitor failed"


# --- a test-only urlconf: tiny views that raise each kind of error ------------------------


class EchoInput(serializers.Serializer):
    text = serializers.CharField(max_length=5)


@api_view(["POST"])
@permission_classes([AllowAny])
def echo(request):
    serializer = EchoInput(data=request.data)
    serializer.is_valid(raise_exception=True)
    return Response(serializer.validated_data)


@api_view(["GET"])
def own_key(request, pk: int):
    api_key = get_object_or_404(ApiKey.objects.filter(user=request.user), pk=pk)
    return Response({"name": api_key.name})


@api_view(["GET"])
@permission_classes([AllowAny])
def crash(request):
    raise RuntimeError(CRASH_TEXT)


def plain_django_crash(request):
    raise RuntimeError(CRASH_TEXT)


class TwoPerMinute(AnonRateThrottle):
    rate = "2/minute"


@api_view(["GET"])
@permission_classes([AllowAny])
@throttle_classes([TwoPerMinute])
def limited(request):
    return Response({"ok": True})


urlpatterns = [
    path("api/test/echo/", echo),
    path("api/test/keys/<int:pk>/", own_key),
    path("api/test/crash/", crash),
    path("api/test/plain-crash/", plain_django_crash),
    path("api/test/limited/", limited),
    *site_urlpatterns,
]
handler404 = "infrastructure.api_errors.not_found_view"
handler500 = "infrastructure.api_errors.server_error_view"

with_test_views = pytest.mark.urls("tests.test_errors")


# --- 401 ----------------------------------------------------------------------------------


def test_401_without_credentials(api_client, db):
    response = api_client.get("/api/v1/me/")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": "Authentication credentials were not provided.",
            "details": {},
        }
    }


# --- 404 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/no-such-thing/", "/api/v1/me/extra/", "/api/v2/me/", "/api/"]
)
def test_404_for_an_unknown_api_path(api_client, path):
    response = api_client.get(path, HTTP_X_REQUEST_ID="trace-404")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response["X-Request-ID"] == "trace-404"
    assert response.json() == NOT_FOUND


def test_404_outside_the_api_is_a_page_not_json(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@with_test_views
def test_404_for_an_unknown_object(alice_client):
    response = alice_client.get("/api/test/keys/999999/")

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@with_test_views
def test_404_for_an_object_of_another_user(alice_client, bob):
    bobs_key, _ = api_key_make(bob, name="bob-key")

    response = alice_client.get(f"/api/test/keys/{bobs_key.pk}/")

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


# --- 405, 415, 400 ------------------------------------------------------------------------


def test_405_for_a_method_the_endpoint_does_not_take(alice_client):
    response = alice_client.post("/api/v1/me/", {}, format="json")

    assert response.status_code == 405
    assert response.json() == {
        "error": {
            "code": "method_not_allowed",
            "message": 'Method "POST" not allowed.',
            "details": {},
        }
    }


@with_test_views
def test_415_for_a_form_encoded_body(api_client):
    response = api_client.post(
        "/api/test/echo/", "text=hi", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert response.json() == {
        "error": {
            "code": "unsupported_media_type",
            "message": 'Unsupported media type "application/x-www-form-urlencoded" in request.'
            " Send application/json.",
            "details": {},
        }
    }


@with_test_views
def test_400_for_a_malformed_json_body(api_client):
    body = '{"text": "hi"'
    with pytest.raises(json.JSONDecodeError) as decode_error:
        json.loads(body)
    message = f"JSON parse error - {decode_error.value}"

    response = api_client.post("/api/test/echo/", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "validation_error", "message": message, "details": {"body": [message]}}
    }


@with_test_views
def test_400_for_a_body_over_the_upload_limit(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    message = "The request body is larger than 100 bytes."

    response = api_client.post("/api/test/echo/", {"text": "x" * 200}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "validation_error", "message": message, "details": {"body": [message]}}
    }


@with_test_views
def test_400_names_the_invalid_fields(api_client):
    response = api_client.post("/api/test/echo/", {"text": "too long"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "Invalid input: Ensure this field has no more than 5 characters.",
            "details": {"text": ["Ensure this field has no more than 5 characters."]},
        }
    }


@with_test_views
def test_a_valid_body_passes(api_client):
    response = api_client.post("/api/test/echo/", {"text": "hi"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"text": "hi"}


# --- 429 ----------------------------------------------------------------------------------


def _assert_rate_limited(response) -> None:
    assert response.status_code == 429
    body = response.json()
    retry_after_s = body["error"]["details"]["retry_after_s"]
    assert body == {
        "error": {
            "code": "rate_limited",
            "message": "Too many requests.",
            "details": {"retry_after_s": retry_after_s},
        }
    }
    assert 0 < retry_after_s <= 60
    assert response["Retry-After"] == str(max(1, int(retry_after_s + 0.999)))


def test_429_with_retry_after_on_a_real_endpoint(alice_client, settings, monkeypatch):
    # given a user rate of 2 a minute (DRF binds the rates at import: patch both places)
    rates = {"anon": "2/minute", "user": "2/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    # when the user calls three times
    responses = [alice_client.get("/api/v1/me/") for _ in range(3)]

    # then the third is refused with a Retry-After
    assert [r.status_code for r in responses[:2]] == [200, 200]
    _assert_rate_limited(responses[2])


@with_test_views
def test_429_with_retry_after_on_a_view_with_its_own_throttle(api_client):
    responses = [api_client.get("/api/test/limited/") for _ in range(3)]

    assert [r.status_code for r in responses[:2]] == [200, 200]
    _assert_rate_limited(responses[2])


# --- 500 ----------------------------------------------------------------------------------


@with_test_views
def test_500_from_an_api_view_hides_the_traceback(api_client):
    response = api_client.get("/api/test/crash/", HTTP_X_REQUEST_ID="trace-crash")

    assert response.status_code == 500
    assert response["X-Request-ID"] == "trace-crash"
    assert response.json() == INTERNAL
    body = response.content.decode()
    assert CRASH_TEXT not in body
    assert "Traceback" not in body
    assert "RuntimeError" not in body


@with_test_views
def test_500_from_a_plain_django_view_under_the_api_is_json(client):
    client.raise_request_exception = False

    response = client.get("/api/test/plain-crash/", HTTP_X_REQUEST_ID="trace-plain-crash")

    assert response.status_code == 500
    assert response["X-Request-ID"] == "trace-plain-crash"
    assert response.json() == INTERNAL
    assert CRASH_TEXT not in response.content.decode()
    assert "Traceback" not in response.content.decode()


@with_test_views
def test_an_unhandled_api_error_is_logged_with_its_request_id(api_client, log_output):
    api_client.get("/api/test/crash/", HTTP_X_REQUEST_ID="trace-crash-log")

    [line] = log_output.events("api.unhandled_exception")
    assert line["request_id"] == "trace-crash-log"
    assert line["level"] == "error"
    assert line["view"] == "crash"
    assert f"RuntimeError: {CRASH_TEXT}" in line["exception"]
