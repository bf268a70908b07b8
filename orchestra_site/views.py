"""Operations views: liveness, readiness, agents' status."""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agents.health import agents_status, model_circuits
from orchestra_site.health import readiness


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
