"""Widgets of the admin index page: each a function taking the request and returning a
dict {"title", "rows": [(label, value)], "link"?}, or None to hide itself."""

from django.conf import settings

from access.dashboard import api_access
from orchestra_site.health import readiness


def service_health(request) -> dict:
    is_ready, checks = readiness()
    rows = [("Mode", "full stack" if settings.FULL_STACK else "embedded")]
    for name, check in checks.items():
        latency = f" ({check['latency_ms']} ms)" if check["latency_ms"] is not None else ""
        rows.append((name.replace("_", " ").capitalize(), check["status"] + latency))
    return {
        "title": "Service health" + ("" if is_ready else " — NOT READY"),
        "rows": rows,
        "link": "/ready/",
    }


WIDGETS = [service_health, api_access]


def render_widgets(request) -> list[dict]:
    return [widget for func in WIDGETS if (widget := func(request)) is not None]
