"""GET …/turns/{number}/events/: a turn's events as Server-Sent Events.

An async view, so a waiting stream holds no thread. Resumes after `Last-Event-ID` from the
turn's buffer; a turn whose buffer has expired is replayed from the database.
"""

import json

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed

from access.authentication import ApiKeyAuthentication
from conversations import payloads, selectors
from conversations.events import TERMINAL_TYPES, event_buffer
from conversations.models import Turn
from infrastructure.api_errors import error_body

KEEPALIVE_SECONDS = 15
EVENT_TYPES = frozenset({"turn.accepted", "turn.delta", "turn.reset", "turn.tool", *TERMINAL_TYPES})


def _format(event: dict) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


def replay_from_database(turn: Turn, after_seq: int = 0) -> list[dict]:
    """The end of a finished turn whose live buffer is gone, rebuilt from its row.

    From the start: accepted, the whole text, the terminal event (seq 1-3). For a client
    that already saw part of the stream: a reset, the whole text and the terminal event,
    numbered after what it saw, so nothing is lost and no text is doubled.
    """
    if after_seq == 0:
        events = [payloads.turn_event(turn, "turn.accepted", replayed=False)]
    else:
        events = [payloads.turn_event(turn, "turn.reset")]
    if turn.output:
        events.append(payloads.turn_event(turn, "turn.delta", text=turn.output))
    event_type, data = payloads.turn_ending(turn)
    events.append(payloads.turn_event(turn, event_type, **data))
    return [{**event, "seq": seq} for seq, event in enumerate(events, start=after_seq + 1)]


async def _user(request):
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer"):
        parts = header.split()
        if len(parts) != 2:
            return None
        try:
            user, _key = await sync_to_async(ApiKeyAuthentication.authenticate_key)(parts[1])
        except AuthenticationFailed:
            return None
        return user
    user = await request.auser()
    return user if user.is_authenticated else None


@sync_to_async
def _find_turn(user, conversation_id, number) -> Turn | None:
    conversation = selectors.conversations_visible_to(user).filter(pk=conversation_id).first()
    if conversation is None:
        return None
    return Turn.objects.filter(conversation=conversation, number=number).first()


@sync_to_async
def _reload(turn: Turn) -> Turn:
    return Turn.objects.get(pk=turn.pk)


@csrf_exempt  # GET only; any other method is answered 405 in the API's format
async def turn_events(request, conversation_id, number: int):
    if request.method != "GET":
        return JsonResponse(error_body("method_not_allowed", "Use GET."), status=405)
    user = await _user(request)
    if user is None:
        response = JsonResponse(
            error_body("not_authenticated", "Invalid or missing credentials."), status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    raw_last = request.headers.get("Last-Event-ID", "0").strip() or "0"
    if not raw_last.isdigit() or len(raw_last) > 9:
        return JsonResponse(
            error_body(
                "validation_error",
                "Last-Event-ID must be a non-negative integer.",
                {"Last-Event-ID": ["A non-negative integer."]},
            ),
            status=400,
        )
    turn = await _find_turn(user, conversation_id, number)
    if turn is None:
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    response = StreamingHttpResponse(
        _stream(turn, int(raw_last)), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _stream(turn: Turn, after_seq: int):
    buffer = event_buffer()
    if turn.is_terminal and not await sync_to_async(buffer.has_events)(turn.pk):
        for event in replay_from_database(turn, after_seq):
            yield _format(event)
        return
    if await sync_to_async(buffer.has_ended)(turn.pk):
        # Everything is in the buffer already: send what the client has not seen, and end.
        for event in await sync_to_async(buffer.read)(turn.pk, after_seq):
            yield _format(event)
        return
    while True:
        events = await buffer.aread(turn.pk, after_seq, KEEPALIVE_SECONDS)
        for event in events:
            after_seq = event["seq"]
            yield _format(event)
            if event["type"] in TERMINAL_TYPES:
                return
        if events:
            continue
        if await sync_to_async(buffer.has_ended)(turn.pk):
            return  # the client had already seen the terminal event
        fresh = await _reload(turn)
        if fresh.is_terminal:
            # The buffer lost its end (expired mid-stream): finish from the database.
            for event in replay_from_database(fresh, after_seq):
                yield _format(event)
            return
        yield ": keepalive\n\n"


def add_to_schema(result, generator, request, public):
    """drf-spectacular postprocessing hook: this view is not DRF's, so its operation is
    declared here."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    result["paths"]["/api/v1/conversations/{conversation_id}/turns/{number}/events/"] = {
        "get": {
            "operationId": "turns_events",
            "summary": "A turn's events, streamed",
            "description": (
                "Server-Sent Events: each event's `id` is its `seq`, its `event` the type, "
                "its `data` the event as JSON. Ends after the turn's terminal event. "
                "`Last-Event-ID` resumes after that seq."
            ),
            "tags": ["v1"],
            "parameters": [
                {
                    "in": "path",
                    "name": "conversation_id",
                    "schema": {"type": "string", "format": "uuid"},
                    "required": True,
                },
                {"in": "path", "name": "number", "schema": {"type": "integer"}, "required": True},
                {
                    "in": "header",
                    "name": "Last-Event-ID",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
                    "description": "Resume after the event with this seq.",
                },
            ],
            "security": [{"bearerAuth": []}, {"cookieAuth": []}],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {
                        "text/event-stream": {
                            "schema": {
                                "type": "object",
                                "description": "One event; `data` is the event as JSON.",
                                "properties": {
                                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                                    "event": {"type": "string", "enum": sorted(EVENT_TYPES)},
                                    "data": {"type": "string"},
                                },
                                "required": ["id", "event", "data"],
                            }
                        }
                    },
                },
                "400": {"description": "validation_error: a bad Last-Event-ID.", "content": error},
                "401": {"description": "not_authenticated.", "content": error},
                "404": {"description": "not_found.", "content": error},
                "500": {"description": "internal.", "content": error},
                "503": {"description": "dependency_unavailable.", "content": error},
            },
        }
    }
    return result
