"""Every API error has one shape: {"error": {"code", "message", "details"}} (docs/api.md)."""

from typing import Any

import kombu.exceptions
import redis.exceptions
import structlog
from django import db
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views import csrf
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from infrastructure.errors import DependencyUnavailable, DomainError

log = structlog.get_logger("orchestra.api")

# The HTTP status of each domain error code (docs/api.md).
STATUS_BY_CODE = {
    "validation_error": status.HTTP_400_BAD_REQUEST,
    "not_authenticated": status.HTTP_401_UNAUTHORIZED,
    "budget_exceeded": status.HTTP_402_PAYMENT_REQUIRED,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conversation_busy": status.HTTP_409_CONFLICT,
    "conversation_closed": status.HTTP_409_CONFLICT,
    "idempotency_mismatch": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
    "provider_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "dependency_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
}


# A service we depend on did not answer: 503 dependency_unavailable, not 500 internal.
DEPENDENCY_ERRORS = (
    db.OperationalError,
    db.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)


def error_body(code: str, message: str, details: dict | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten_message(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _flatten_message(detail[0])
    if isinstance(detail, dict) and detail:
        return _flatten_message(next(iter(detail.values())))
    return str(detail)


def _standard(exc: exceptions.APIException) -> tuple[str, str, dict]:
    """Map DRF's exceptions onto our codes: (code, message, details)."""
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return "validation_error", "Invalid input: " + _flatten_message(details), details
    if isinstance(exc, exceptions.ParseError):
        return "validation_error", str(exc.detail), {"body": [str(exc.detail)]}
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return "not_authenticated", str(exc.detail), {}
    if isinstance(exc, exceptions.PermissionDenied):
        return "forbidden", str(exc.detail), {}
    if isinstance(exc, exceptions.NotFound):
        return "not_found", "Not found.", {}
    if isinstance(exc, exceptions.MethodNotAllowed):
        return "method_not_allowed", str(exc.detail), {}
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return "unsupported_media_type", str(exc.detail) + " Send application/json.", {}
    if isinstance(exc, exceptions.NotAcceptable):
        return "not_acceptable", str(exc.detail), {}
    if isinstance(exc, exceptions.Throttled):
        return "rate_limited", "Too many requests.", {"retry_after_s": exc.wait}
    return "error", str(exc.detail), {}


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF EXCEPTION_HANDLER: every error, including unhandled ones, in the standard shape."""
    set_rollback()
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = exceptions.ParseError(f"The request body is larger than {limit} bytes.")

    if isinstance(exc, DEPENDENCY_ERRORS):
        log.warning("api.dependency_unavailable", error=type(exc).__name__, exc_info=True)
        exc = DependencyUnavailable()
    if isinstance(exc, DomainError):
        return Response(
            error_body(exc.code, exc.message, exc.details), status=STATUS_BY_CODE[exc.code]
        )
    if not isinstance(exc, exceptions.APIException):
        log.exception("api.unhandled_exception", view=type(context.get("view")).__name__)
        return Response(
            error_body("internal", "Internal error. Quote the X-Request-ID when reporting it."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    code, message, details = _standard(exc)
    response = Response(error_body(code, message, details), status=exc.status_code)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        response["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        response.status_code = status.HTTP_401_UNAUTHORIZED
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt  # a POST to an unknown API path is a 404, not a CSRF failure
def not_found_view(request, exception=None):
    """handler404: JSON for API paths, Django's page elsewhere. An API path that only
    lacks its trailing slash is redirected to it, as APPEND_SLASH would."""
    if _is_api(request) and not request.path.endswith("/") and request.method in ("GET", "HEAD"):
        try:
            resolve(request.path + "/")
        except Resolver404:
            pass
        else:
            query = request.META.get("QUERY_STRING")
            return HttpResponsePermanentRedirect(
                request.path + "/" + (f"?{query}" if query else "")
            )
    if _is_api(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return page_not_found(request, exception)


def server_error_view(request):
    """handler500: JSON for API paths, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(
            error_body("internal", "Internal error. Quote the X-Request-ID when reporting it."),
            status=500,
        )
    return server_error(request)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: JSON for API paths, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(
            error_body("forbidden", f"CSRF check failed: {reason}".rstrip(": ")), status=403
        )
    return csrf.csrf_failure(request, reason)
