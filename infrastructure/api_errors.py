"""Every API error has one shape: {"error": {"code", "message", "details"}} (DESIGN.md §4)."""

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
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

log = structlog.get_logger("orchestra.api")


class OrchestraError(exceptions.APIException):
    """A domain error with a stable code from the DESIGN.md §4 table."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "validation_error"
    default_detail = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: dict | None = None):
        super().__init__(detail=message or self.default_detail, code=self.default_code)
        self.details = details or {}


class ConversationBusy(OrchestraError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conversation_busy"
    default_detail = "Another turn of this conversation is still running."


class ConversationClosed(OrchestraError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conversation_closed"
    default_detail = "This conversation does not take new turns."


class IdempotencyMismatch(OrchestraError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_mismatch"
    default_detail = "This turn_id was already used with a different text."


class BudgetExceeded(OrchestraError):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_code = "budget_exceeded"
    default_detail = "A hard budget would be exceeded."


class ProviderUnavailable(OrchestraError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "provider_unavailable"
    default_detail = "No model of this agent is available right now."


class DependencyUnavailable(OrchestraError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "dependency_unavailable"
    default_detail = "A service Orchestra depends on is unavailable."


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
    if isinstance(exc, OrchestraError):
        return exc.default_code, str(exc.detail), exc.details
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
