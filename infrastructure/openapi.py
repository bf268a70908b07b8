"""OpenAPI: the standard error body on every operation."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. not_found.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.DictField(
        help_text="Per-field messages for validation errors; extra facts otherwise."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


STANDARD_ERRORS = {
    "400": "validation_error: the body, query or a header is not valid.",
    "401": "not_authenticated: no, unknown, revoked or expired credentials.",
    "403": "forbidden: not allowed.",
    "404": "not_found: no such object (also objects of other users).",
    "429": "rate_limited: throttled; wait the Retry-After seconds.",
    "500": "internal: an unexpected error; quote the X-Request-ID.",
    "503": "dependency_unavailable: a service Orchestra depends on did not answer.",
}


class OrchestraAutoSchema(AutoSchema):
    """Adds the standard error responses to every operation that does not declare them."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in STANDARD_ERRORS.items():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code)
                response["description"] = description
                responses[code] = response
        return responses
