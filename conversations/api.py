"""REST endpoints for conversations and turns (docs/api.md). Thin: services do the work."""

import json
from collections.abc import AsyncIterator

import structlog
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations import payloads, selectors, services, turn_waits
from conversations.models import Turn
from conversations.serializers import (
    TURN_ID_VALIDATOR,
    ConversationCreateInput,
    ConversationOutput,
    ConversationPage,
    TurnCreateInput,
    TurnOutput,
    TurnPage,
    WaitQuery,
)
from infrastructure.api_errors import DEPENDENCY_ERRORS, error_body
from infrastructure.errors import DependencyUnavailable, InvalidInput
from infrastructure.loop_responses import LoopResponse
from infrastructure.off_loop import off_loop
from infrastructure.openapi import ErrorSerializer
from infrastructure.prefer import MAX_WAIT_S, preferred_wait

log = structlog.get_logger("orchestra.api")

IDEMPOTENCY_HEADER = "Idempotency-Key"
PREFER_HEADER = "Prefer"


class ConversationPagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50


class TurnPagination(CursorPagination):
    ordering = "number"
    page_size = 100


class ConversationListCreate(APIView):
    @extend_schema(
        operation_id="conversations_list",
        summary="List conversations",
        description="Your conversations, newest first; staff with the view permission see all.",
        responses=ConversationPage,
    )
    def get(self, request: Request) -> Response:
        paginator = ConversationPagination()
        page = paginator.paginate_queryset(
            selectors.conversations_for_output(request.user), request, view=self
        )
        return paginator.get_paginated_response(ConversationOutput(page, many=True).data)

    @extend_schema(
        operation_id="conversations_create",
        summary="Start a conversation",
        request=ConversationCreateInput,
        responses={201: ConversationOutput},
        examples=[
            OpenApiExample(
                "With the default agent", value={"metadata": {"order": "A-1"}}, request_only=True
            )
        ],
    )
    def post(self, request: Request) -> Response:
        payload = ConversationCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        conversation = services.conversation_create(
            owner=request.user,
            agent_slug=payload.validated_data.get("agent"),
            metadata=payload.validated_data["metadata"],
        )
        return Response(ConversationOutput(conversation).data, status=status.HTTP_201_CREATED)


def _visible_conversation(request: Request, conversation_id):
    """The conversation if the user may see it; 404 otherwise (others' included)."""
    return get_object_or_404(selectors.conversations_visible_to(request.user), pk=conversation_id)


class ConversationDetail(APIView):
    @extend_schema(
        operation_id="conversations_retrieve",
        summary="A conversation",
        responses=ConversationOutput,
    )
    def get(self, request: Request, conversation_id) -> Response:
        conversation = get_object_or_404(
            selectors.conversations_for_output(request.user), pk=conversation_id
        )
        return Response(ConversationOutput(conversation).data)


class ConversationClose(APIView):
    @extend_schema(
        operation_id="conversations_close",
        summary="Close a conversation",
        description="Closes it for good: queued or running turns are cancelled.",
        request=None,
        responses=ConversationOutput,
    )
    def post(self, request: Request, conversation_id) -> Response:
        conversation = selectors.conversation_for_status_change(request.user, conversation_id)
        if conversation is None:
            if selectors.conversations_visible_to(request.user).filter(pk=conversation_id).exists():
                raise PermissionDenied("You may view this conversation but not change it.")
            raise NotFound()
        conversation = services.conversation_close(conversation=conversation)
        return Response(ConversationOutput(conversation).data)


TURN_SUBMIT_EXAMPLES = [
    OpenApiExample(
        "A question",
        value={"text": "Where is my parcel?", "turn_id": "msg-0001"},
        request_only=True,
    ),
]


class TurnListCreate(APIView):
    @extend_schema(
        operation_id="turns_list",
        summary="Turns of a conversation, by number",
        responses=TurnPage,
    )
    def get(self, request: Request, conversation_id) -> Response:
        conversation = _visible_conversation(request, conversation_id)
        paginator = TurnPagination()
        page = paginator.paginate_queryset(selectors.turns_of(conversation), request, view=self)
        return paginator.get_paginated_response(TurnOutput(page, many=True).data)

    @extend_schema(
        operation_id="turns_submit",
        summary="Submit a turn",
        description=(
            "Records the customer's message as the conversation's next turn and runs it. "
            "The turn_id (body) or Idempotency-Key (header) makes retries safe: the same "
            "key with the same text returns the existing turn with `Idempotent-Replayed: "
            "true` and runs nothing; with another text it is `idempotency_mismatch`. With "
            "`Prefer: wait=N` (RFC 7240) the answer waits up to N seconds (at most "
            f"{MAX_WAIT_S}) for the turn to end and shows it as it then is, with "
            "`Preference-Applied: wait=N`: one request instead of a submission and a "
            "long-poll."
        ),
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Same as turn_id.",
            ),
            OpenApiParameter(
                PREFER_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=False,
                description=(
                    f"`wait=N`: wait up to N seconds (at most {MAX_WAIT_S}) for the turn to "
                    "end. Other preferences are ignored."
                ),
                examples=[OpenApiExample("Wait for the answer", value="wait=30")],
            ),
        ],
        request=TurnCreateInput,
        responses={
            202: OpenApiResponse(
                TurnOutput,
                description="A new turn: queued, or with `Prefer: wait` as it was when it "
                "ended or the wait ran out.",
            ),
            200: OpenApiResponse(TurnOutput, description="A replay: the existing turn."),
            409: OpenApiResponse(
                ErrorSerializer, description="conversation_busy or conversation_closed."
            ),
            422: OpenApiResponse(ErrorSerializer, description="idempotency_mismatch."),
        },
        examples=TURN_SUBMIT_EXAMPLES,
    )
    def post(self, request: Request, conversation_id) -> Response:
        payload = TurnCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        turn_id = _turn_id(request, payload.validated_data.get("turn_id"))
        wait = _preferred_wait(request)
        # Only the owner submits turns (staff speak through takeover, not as the customer).
        submission = services.turn_submit(
            conversation_id=conversation_id,
            owner=request.user,
            text=payload.validated_data["text"],
            turn_id=turn_id,
        )
        turn = submission.turn
        answer_status = status.HTTP_200_OK if submission.replayed else status.HTTP_202_ACCEPTED
        headers = {"Location": reverse("api:turn-detail", args=[turn.conversation_id, turn.number])}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        recorded = TurnOutput(turn).data
        if wait and not turn.is_terminal:
            response = LoopResponse(_submission_after_waiting(turn.pk, wait, recorded), **JSON)
            response.status_code = answer_status
            for name, value in headers.items():
                response[name] = value
            return response
        if wait:
            headers["Preference-Applied"] = f"wait={wait}"
        return Response(recorded, status=answer_status, headers=headers)


def _turn_id(request: Request, body_turn_id: str | None) -> str | None:
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is not None:
        try:
            TURN_ID_VALIDATOR(header)
        except DjangoValidationError:
            raise InvalidInput(
                "Invalid Idempotency-Key header.",
                details={IDEMPOTENCY_HEADER: [TURN_ID_VALIDATOR.message]},
            ) from None
        if body_turn_id is not None and body_turn_id != header:
            raise InvalidInput(
                "turn_id and the Idempotency-Key header differ.",
                details={"turn_id": ["Must equal the Idempotency-Key header when both are sent."]},
            )
    return body_turn_id or header


JSON = {"content_type": "application/json"}


def _submission_after_waiting(turn_pk: int, wait_s: int, recorded: dict):
    """The body of a submission with `Prefer: wait`: the turn once it ended, else as it is
    when the wait ran out. The turn is recorded already: when waiting fails (Redis and the
    database did not answer), the answer is the turn as recorded, without
    Preference-Applied, so that the client still learns it and can follow it."""

    async def body(response: LoopResponse) -> AsyncIterator[bytes]:
        try:
            turn = await turn_waits.turn_when_ended(turn_pk, wait_s)
            if turn is None:
                turn = await off_loop(_turn_payload, turn_pk)
            response["Preference-Applied"] = f"wait={wait_s}"
        except Exception:
            log.warning("turn.wait_failed", turn=turn_pk, exc_info=True)
            turn = recorded
        yield _json(response, turn)

    return body


def _turn_after_waiting(turn_pk: int, wait_s: int):
    """The body of `?wait=`: the turn once it ended, else as it is when the wait ran out."""

    async def body(response: LoopResponse) -> AsyncIterator[bytes]:
        try:
            turn = await turn_waits.turn_when_ended(turn_pk, wait_s)
            if turn is None:
                turn = await off_loop(_turn_payload, turn_pk)
        except DEPENDENCY_ERRORS:
            log.warning("turn.wait_failed", turn=turn_pk, exc_info=True)
            response.status_code = 503
            unavailable = DependencyUnavailable()
            yield _json(response, error_body(unavailable.code, unavailable.message))
            return
        yield _json(response, turn)

    return body


def _turn_payload(turn_pk: int) -> dict:
    return payloads.turn_payload(Turn.objects.get(pk=turn_pk))


def _json(response: LoopResponse, data: dict) -> bytes:
    """As DRF's JSONRenderer renders it."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    response["Content-Length"] = str(len(body))
    return body


def _preferred_wait(request: Request) -> int:
    try:
        return preferred_wait(request.headers.get(PREFER_HEADER))
    except ValueError as error:
        raise InvalidInput(
            f"Invalid {PREFER_HEADER} header.", details={PREFER_HEADER: [str(error)]}
        ) from None


class TurnDetail(APIView):
    @extend_schema(
        operation_id="turns_retrieve",
        summary="A turn",
        description=f"With `?wait=N` (0-{MAX_WAIT_S}), waits up to N seconds for the turn to end.",
        parameters=[WaitQuery],
        responses=TurnOutput,
    )
    def get(self, request: Request, conversation_id, number: int) -> Response:
        query = WaitQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        turn = selectors.turn_visible_to(request.user, conversation_id, number)
        if turn is None:
            raise NotFound()
        wait = query.validated_data["wait"]
        if wait and not turn.is_terminal:
            return LoopResponse(_turn_after_waiting(turn.pk, wait), **JSON)
        return Response(TurnOutput(turn).data)
