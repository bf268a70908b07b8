"""The API's view of the caller."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from access.models import ApiKey


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
