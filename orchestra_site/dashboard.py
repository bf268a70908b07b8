"""Widgets of the admin index page.

An app adds one with `@dashboard_widget(order)`: a function taking the request and
returning a dict {"title", "rows": [(label, value)], "link"?} or None to hide itself.
"""

from collections.abc import Callable

from django.conf import settings

from orchestra_site.health import readiness
from orchestra_site.models import ApiKey

Widget = Callable[..., dict | None]
_WIDGETS: list[tuple[int, Widget]] = []


def dashboard_widget(order: int):
    def register(func: Widget) -> Widget:
        _WIDGETS.append((order, func))
        _WIDGETS.sort(key=lambda item: item[0])
        return func

    return register


def render_widgets(request) -> list[dict]:
    return [w for _, func in _WIDGETS if (w := func(request)) is not None]


@dashboard_widget(order=900)
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


@dashboard_widget(order=910)
def access(request) -> dict | None:
    if not request.user.has_perm("orchestra.view_apikey"):
        return None
    keys = ApiKey.objects.usable()
    if not request.user.is_superuser:
        keys = keys.filter(user=request.user)
    return {"title": "API access", "rows": [("Usable API keys", keys.count())]}
