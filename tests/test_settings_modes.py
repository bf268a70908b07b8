"""The settings module in real processes: production refuses insecure values, and the
embedded default runs with nothing but Python (SQLite, in-memory layers)."""

import http.cookiejar
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(PROJECT_DIR / "manage.py")
GOOD_SECRET_KEY = secrets.token_urlsafe(64)
NOT_CONFIGURED = {"status": "not_configured", "latency_ms": None, "required": False}


def clean_env(**values: str) -> dict[str, str]:
    """Only what a process needs to run, plus `values`: none of the test run's settings."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    env.update(values)
    return env


def production_env(**overrides: str) -> dict[str, str]:
    values = {
        "DJANGO_ENV": "production",
        "SECRET_KEY": GOOD_SECRET_KEY,
        "ALLOWED_HOSTS": "example.com",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
    }
    values.update(overrides)
    return clean_env(**{key: value for key, value in values.items() if value is not None})


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, MANAGE, *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


# --- production refuses an insecure configuration ------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": "too-short-to-be-a-secret"}, "SECRET_KEY"),
        (
            {"SECRET_KEY": "django-insecure-orchestra-development-key-do-not-use-in-production"},
            "SECRET_KEY",
        ),
        ({"DEBUG": "true"}, "DEBUG"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
    ],
    ids=[
        "missing-secret-key",
        "short-secret-key",
        "development-secret-key",
        "debug-on",
        "empty-allowed-hosts",
        "missing-allowed-hosts",
    ],
)
def test_production_refuses_to_start_with_an_insecure_setting(overrides, named):
    result = manage("check", env=production_env(**overrides))

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_production_properly_configured_passes_the_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, [True, 5]), ("false", [None, None])],
)
def test_postgresql_statements_are_prepared_unless_turned_off(value, expected):
    show = (
        "from django.db import connection as c; import json; "
        "print(json.dumps([c.settings_dict['OPTIONS'].get(k) "
        "for k in ('server_side_binding', 'prepare_threshold')]))"
    )
    env = production_env(DATABASE_PREPARED_STATEMENTS=value)

    result = manage("shell", "-c", show, env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


# --- the embedded default -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """urllib with a cookie jar: enough to log in to the admin."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str, str]:
        return self._open(urllib.request.Request(self.base_url + path))

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(self.base_url + path, data=data))

    def api(self, method: str, path: str, api_key: str, body: dict | None = None):
        """(status, headers, body text) of an API request with an API key."""
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def _open(self, request) -> tuple[int, str, str]:
        """(status, final url path, body), following redirects."""
        try:
            with self.opener.open(request, timeout=30) as response:
                final_path = urllib.parse.urlsplit(response.geturl()).path
                return response.status, final_path, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, urllib.parse.urlsplit(error.url).path, error.read().decode()


def _wait_until_up(browser: Browser, server: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"uvicorn exited with {server.returncode}:\n{log_file.read_text()}")
        try:
            browser.get("/health/")
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.25)
    pytest.fail(f"uvicorn did not answer within 60 s:\n{log_file.read_text()}")


def _log_in(browser: Browser, password: str) -> tuple[int, str, str]:
    _, _, login_page = browser.get("/admin/login/?next=/admin/")
    csrf_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    return browser.post_form(
        "/admin/login/?next=/admin/",
        {"username": "admin", "password": password, "csrfmiddlewaretoken": csrf_token},
    )


def test_the_embedded_default_runs_with_nothing_but_python(tmp_path):
    # given an environment without DATABASE_URL, REDIS_URL or CELERY_BROKER_URL
    env = clean_env(ORCHESTRA_DATA_DIR=str(tmp_path))
    password_file = tmp_path / "admin-password.txt"

    # when the database is migrated and the admin login ensured
    migrate = manage("migrate", "--noinput", env=env)
    first = manage("ensure_admin", env=env)

    # then a SQLite file is created, and a generated password is printed and kept
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "orchestra.sqlite3").is_file()
    assert first.returncode == 0, first.stderr
    password = re.search(r"user: admin\s+password: (\S+)", first.stdout).group(1)
    assert password_file.read_text() == password + "\n"
    assert password_file.stat().st_mode & 0o777 == 0o600

    # when ensure_admin runs again
    second = manage("ensure_admin", env=env)

    # then it prints no new password and keeps the file
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"Admin login: admin (password in {password_file})"
    assert password not in second.stdout
    assert password_file.read_text() == password + "\n"

    # and an API key, the demo data (a default agent) and a quick local model
    assert manage("load_demo_data", env=env).returncode == 0
    api_key = manage("create_api_key", "admin", env=env).stdout.strip().splitlines()[-1]
    env["LOCAL_MODEL_TOKEN_DELAY_MS"] = "5"

    # when the ASGI server runs
    port = _free_port()
    browser = Browser(f"http://127.0.0.1:{port}")
    log_file = tmp_path / "uvicorn.log"
    with log_file.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "orchestra_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(browser, server, log_file)

        # then it is alive and ready with the database only
        health = browser.get("/health/")
        assert (health[0], json.loads(health[2])) == (200, {"status": "ok"})
        status, _, ready_body = browser.get("/ready/")
        ready = json.loads(ready_body)
        assert status == 200
        assert ready["status"] == "ready"
        assert ready["checks"]["database"]["status"] == "healthy"
        assert {name: ready["checks"][name] for name in ("redis", "channel_layer", "broker")} == {
            "redis": NOT_CONFIGURED,
            "channel_layer": NOT_CONFIGURED,
            "broker": NOT_CONFIGURED,
        }
        docs_status, _, docs = browser.get("/api/docs/")
        assert docs_status == 200
        assert "swagger-ui" in docs

        # and a wrong password is refused while the generated one logs in to the admin
        refused_status, refused_path, refused_page = _log_in(browser, password + "-wrong")
        assert (refused_status, refused_path) == (200, "/admin/login/")
        assert "Please enter the correct username and password" in refused_page
        status, final_path, admin_index = _log_in(browser, password)
        assert (status, final_path) == (200, "/admin/")
        assert "Orchestra back-office" in admin_index
        assert "Service health" in admin_index
        assert "embedded" in admin_index

        # and a customer's turn, through the server's two HTTP paths (the sync views on
        # the thread pool, the SSE stream on the event loop), streams and completes
        status, _, body = browser.api("POST", "/api/v1/conversations/", api_key, {})
        assert status == 201, body
        turns = f"/api/v1/conversations/{json.loads(body)['id']}/turns/"
        status, headers, body = browser.api("POST", turns, api_key, {"text": "Hello!"})
        assert (status, json.loads(body)["status"]) == (202, "queued")
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
        status, headers, stream = browser.api("GET", turns + "1/events/", api_key)
        assert (status, headers["Content-Type"]) == (200, "text/event-stream; charset=utf-8")
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
        events = [
            json.loads(line.removeprefix("data: "))
            for line in stream.splitlines()
            if line.startswith("data: ")
        ]
        status, _, body = browser.api("GET", turns + "1/?wait=10", api_key)
        turn = json.loads(body)
        assert (status, turn["status"]) == (200, "completed")
        assert events[0]["type"] == "turn.accepted"
        assert events[-1]["type"] == "turn.completed"
        assert "".join(e["text"] for e in events if e["type"] == "turn.delta") == turn["output"]
        assert "built-in local model" in turn["output"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
