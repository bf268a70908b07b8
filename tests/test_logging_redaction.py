"""No secret reaches a log line, whoever logs it and whichever renderer draws it."""

import io
import logging
import uuid

import pytest
import structlog

from access.models import ApiKey
from infrastructure.logging import build_logging_config
from tests.factories import api_key_make

RAW_KEY = "orc_" + "Zx9" * 14 + "Q"  # shaped like ApiKey.generate(): orc_ + 43 url-safe chars
PASSWORD = "Tr0ub4dor-and-3"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.s1gnature"
SECRETS = [RAW_KEY, PASSWORD, BEARER_TOKEN]


@pytest.fixture(params=["json", "console"])
def rendered(request):
    """A logger wired exactly as settings.LOGGING wires the console handler, with the
    json or the console renderer, writing into a buffer. Yields (logger name, buffer)."""
    config = build_logging_config(json_lines=request.param == "json", level="DEBUG")
    formatter_config = dict(config["formatters"]["structlog"])
    formatter = formatter_config.pop("()")(**formatter_config)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    name = f"tests.redaction.{request.param}.{uuid.uuid4().hex}"
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield name, buffer
    finally:
        logger.removeHandler(handler)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_fields_named_like_secrets_are_redacted(rendered, capsys):
    name, buffer = rendered

    structlog.get_logger(name).info(
        "user.login", username="alice", password=PASSWORD, api_key=RAW_KEY, token=BEARER_TOKEN
    )

    text = buffer.getvalue()
    assert "user.login" in text
    assert "alice" in text
    assert text.count("[redacted]") >= 3
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_fields_that_only_resemble_secret_names_are_kept(rendered):
    # Token usage is what makes a turn costed and observable: it must stay readable.
    name, buffer = rendered

    structlog.get_logger(name).info(
        "turn.usage", input_tokens=1200, output_tokens=345, max_tokens=4096, bypass_cache=True
    )

    text = buffer.getvalue()
    assert "[redacted]" not in text
    for value in ("1200", "345", "4096"):
        assert value in text


def test_secret_fields_nested_in_a_dict_are_redacted(rendered, capsys):
    name, buffer = rendered

    structlog.get_logger(name).info(
        "provider.configured",
        payload={"user": "alice", "password": PASSWORD, "api_key": RAW_KEY, "token": BEARER_TOKEN},
        items=[{"password": PASSWORD}],
    )

    text = buffer.getvalue()
    assert "provider.configured" in text
    assert "alice" in text
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_an_authorization_header_dump_is_redacted(rendered, capsys):
    name, buffer = rendered

    structlog.get_logger(name).info(
        "http.headers",
        headers={"Authorization": f"Bearer {BEARER_TOKEN}", "Accept": "application/json"},
        raw=f"Authorization: Bearer {BEARER_TOKEN}",
    )

    text = buffer.getvalue()
    assert "application/json" in text
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_asgi_style_header_pairs_are_redacted(rendered, capsys):
    # A WebSocket scope carries its headers as (bytes, bytes) pairs, the API key included.
    name, buffer = rendered

    structlog.get_logger(name).info(
        "ws.connect",
        headers=[(b"authorization", f"Bearer {RAW_KEY}".encode()), (b"host", b"example.com")],
    )

    text = buffer.getvalue()
    assert "ws.connect" in text
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_secrets_in_free_text_are_redacted(rendered, capsys):
    name, buffer = rendered
    structlog_logger = structlog.get_logger(name)
    stdlib_logger = logging.getLogger(name)

    structlog_logger.info(f"retrying with password={PASSWORD} for alice")
    structlog_logger.info(f"calling upstream with key {RAW_KEY}")
    stdlib_logger.warning("form data: username=alice&password=%s", PASSWORD)
    stdlib_logger.warning("header was Authorization: Bearer %s", BEARER_TOKEN)
    stdlib_logger.warning('body {"api_key": "%s"}', RAW_KEY)

    text = buffer.getvalue()
    assert "retrying with password=[redacted] for alice" in text
    assert "calling upstream with key orc_[redacted]" in text
    assert "username=alice&password=[redacted]" in text
    assert "Authorization: Bearer [redacted]" in text
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_secret_extra_fields_of_stdlib_loggers_are_redacted(rendered, capsys):
    name, buffer = rendered

    logging.getLogger(name).info("login attempt", extra={"password": PASSWORD, "user": "alice"})

    text = buffer.getvalue()
    assert "login attempt" in text
    assert "alice" in text
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_an_exception_whose_message_holds_a_key_is_redacted(rendered, capsys):
    name, buffer = rendered

    try:
        raise ValueError(f"upstream rejected {RAW_KEY} (password={PASSWORD})")
    except ValueError:
        structlog.get_logger(name).exception("upstream.failed")
        logging.getLogger(name).exception("upstream failed (stdlib)")

    text = buffer.getvalue()
    assert text.count("ValueError: upstream rejected orc_[redacted]") == 2
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


def test_an_exception_passed_as_a_field_is_redacted(rendered, capsys):
    # `log.warning("...", error=exc)` is how a caught error is usually reported.
    name, buffer = rendered
    error = ValueError(f"upstream rejected {RAW_KEY}")

    structlog.get_logger(name).warning("upstream.failed", error=error)

    text = buffer.getvalue()
    assert "upstream.failed" in text
    assert "upstream rejected" in text
    assert_no_secret(text)
    assert_no_secret(capsys.readouterr().err)


# --- real requests through the configured logging ---------------------------------------


def test_an_admin_login_does_not_log_the_password(client, superuser, log_output, capsys):
    # given a superuser with a known password
    superuser.set_password(PASSWORD)
    superuser.save()

    # when they log in to the admin, once wrongly and once rightly
    failed = client.post("/admin/login/", {"username": "root", "password": PASSWORD + "x"})
    response = client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})

    # then the requests were logged and neither password appears anywhere in the output
    assert failed.status_code == 200
    assert response.status_code == 302
    access = [(a["method"], a["path"], a["status"]) for a in log_output.events("request.finished")]
    assert access == [("POST", "/admin/login/", 200), ("POST", "/admin/login/", 302)]
    assert PASSWORD not in log_output.text
    assert PASSWORD not in capsys.readouterr().err


@pytest.mark.django_db
def test_api_requests_do_not_log_the_bearer_key(api_client, alice, log_output, capsys):
    # given a valid key and a revoked one
    _, raw_key = api_key_make(alice, name="valid")
    revoked, revoked_key = api_key_make(alice, name="revoked")
    revoked.revoke()
    assert ApiKey.objects.get(pk=revoked.pk).revoked_at is not None

    # when both are used on the API (the rejected one is also logged by Django as a 401)
    ok = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    denied = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {revoked_key}")

    # then both requests were logged and no key appears in the output
    assert (ok.status_code, denied.status_code) == (200, 401)
    access = [(a["path"], a["status"]) for a in log_output.events("request.finished")]
    assert access == [("/api/v1/me/", 200), ("/api/v1/me/", 401)]
    stderr = capsys.readouterr().err
    for key in (raw_key, revoked_key):
        assert key not in log_output.text
        assert key not in stderr
