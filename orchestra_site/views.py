from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from orchestra_site.health import agents_status, model_circuits, readiness
from orchestra_site.models import ApiKey


@require_GET
@never_cache
def health(request):
    """Liveness: the process answers. Touches no dependency."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def ready(request):
    """Readiness: each dependency's state; 503 when a required one fails."""
    is_ready, checks = readiness()
    return JsonResponse(
        {
            "status": "ready" if is_ready else "not_ready",
            "checks": checks,
            # Circuit states live in the database and Redis: skip them when either is down.
            "providers": (
                model_circuits()
                if checks["database"]["status"] != "failing"
                and checks["redis"]["status"] != "failing"
                else {}
            ),
        },
        status=200 if is_ready else 503,
    )


@require_GET
@never_cache
def status(request):
    """The agents and whether they can answer right now."""
    return JsonResponse({"agents": agents_status()})


@extend_schema(
    summary="Who am I",
    description="The authenticated user and, with an API key, which key was used.",
    responses=inline_serializer(
        "Me",
        {
            "username": serializers.CharField(),
            "is_staff": serializers.BooleanField(),
            "auth": serializers.ChoiceField(choices=["api_key", "session"]),
            "api_key": serializers.CharField(allow_null=True),
        },
    ),
)
@api_view(["GET"])
def me(request: Request) -> Response:
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    return Response(
        {
            "username": request.user.get_username(),
            "is_staff": request.user.is_staff,
            "auth": "api_key" if api_key else "session",
            "api_key": api_key.name if api_key else None,
        }
    )
