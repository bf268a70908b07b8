"""GET …/turns/{number}/events/: a turn's events as Server-Sent Events.

The view checks the caller and the turn on its thread; the stream then runs on the event
loop (a LoopResponse), following the turn's buffer: no thread and no Redis connection of
its own per stream. Each event's `id` is `<seq>-<epoch>`: a client resuming with
`Last-Event-ID` gets the events after that seq, or, when the buffer it came from is gone
(Redis lost it) or was trimmed past it, an `error` event `resync_required` and the turn
from the start. A finished turn whose buffer has expired is replayed from the database.
If Redis fails, the stream ends with an `error` event `dependency_unavailable`, which a
client tells from the end of a turn.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator

import structlog
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from redis.exceptions import RedisError
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from conversations import payloads, selectors
from conversations.events import TERMINAL_TYPES, event_buffer
from conversations.models import Turn
from infrastructure.api_errors import error_body
from infrastructure.errors import InvalidInput
from infrastructure.loop_responses import LoopResponse
from infrastructure.off_loop import off_loop

log = structlog.get_logger("orchestra.sse")

KEEPALIVE_SECONDS = 15
EVENT_TYPES = frozenset({"turn.accepted", "turn.delta", "turn.reset", "turn.tool", *TERMINAL_TYPES})
LAST_EVENT_ID = re.compile(r"(\d{1,9})(?:-([0-9a-f]{1,32}))?")


def frame(event: dict) -> bytes:
    return (
        f"id: {event['seq']}-{event['epoch']}\nevent: {event['type']}\n"
        f"data: {json.dumps(event)}\n\n"
    ).encode()


def error_frame(code: str, message: str) -> bytes:
    data = json.dumps({"type": "error", "code": code, "message": message})
    return f"event: error\ndata: {data}\n\n".encode()


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
    numbered = enumerate(events, start=after_seq + 1)
    return [{**event, "seq": seq, "epoch": "db"} for seq, event in numbered]


RESYNC_REQUIRED = "resync_required"


async def turn_event_stream(
    turn_pk: int, after_seq: int, epoch: str | None
) -> AsyncIterator[list[dict] | str]:
    """The turn's events after `after_seq`, in lists as they come, until its terminal one;
    an empty list after a quiet keepalive interval; RESYNC_REQUIRED when the stream the
    client saw cannot be continued (the buffer it came from is gone, or was trimmed past
    it), before the events from the start. `epoch`: of the buffer the client's seq came
    from, if it says. Raises RedisError when Redis fails."""
    buffer = event_buffer()
    async with buffer.follow(turn_pk) as follower:
        check_database = True  # at the start, and after each quiet keepalive interval
        while True:
            follower.changed.clear()
            read = await buffer.read(turn_pk, after_seq)
            if after_seq and read.epoch is not None and _cannot_continue(read, after_seq, epoch):
                yield RESYNC_REQUIRED
                after_seq, epoch = 0, read.epoch
                continue
            if read.events:
                after_seq, epoch = read.events[-1]["seq"], read.epoch
                yield read.events
                if read.events[-1]["type"] in TERMINAL_TYPES:
                    return
                continue
            if read.epoch is not None and (end := await buffer.end(turn_pk)):
                if after_seq >= end.seq:
                    return  # the client had seen the terminal event
                continue  # it came after the read
            if check_database or read.epoch is None:
                turn = await off_loop(Turn.objects.get, pk=turn_pk)
                if turn.is_terminal:
                    # Its end is not in the buffer (expired, or lost): finish from the row.
                    yield replay_from_database(turn, after_seq)
                    return
            check_database = not await _changed_within(follower, KEEPALIVE_SECONDS)
            if check_database:
                yield []


def _cannot_continue(read, after_seq: int, epoch: str | None) -> bool:
    gap = bool(read.events) and read.events[0]["seq"] > after_seq + 1
    return gap or after_seq > read.last_seq or (epoch is not None and epoch != read.epoch)


async def _changed_within(follower, seconds: float) -> bool:
    try:
        await asyncio.wait_for(follower.changed.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _sse_body(turn_pk: int, after_seq: int, epoch: str | None):
    async def body(response: LoopResponse) -> AsyncIterator[bytes]:
        stream = turn_event_stream(turn_pk, after_seq, epoch)
        try:
            first = await anext(stream, None)
        except RedisError:
            log.warning("sse.dependency_unavailable", turn=turn_pk, exc_info=True)
            response.status_code = 503
            response["Content-Type"] = "application/json"
            message = "A service Orchestra depends on is unavailable."
            yield json.dumps(error_body("dependency_unavailable", message)).encode()
            return
        try:
            chunk = first
            while chunk is not None:
                if chunk == RESYNC_REQUIRED:
                    yield error_frame(
                        "resync_required",
                        "The events after your Last-Event-ID are gone: the turn follows "
                        "from its start; drop what you have of it.",
                    )
                elif chunk:
                    yield b"".join(frame(event) for event in chunk)
                else:
                    yield b": keepalive\n\n"
                chunk = await anext(stream, None)
        except RedisError:
            log.warning("sse.dependency_unavailable", turn=turn_pk, exc_info=True)
            yield error_frame(
                "dependency_unavailable", "The stream broke off; reconnect to resume."
            )

    return body


class JsonOnly(BaseContentNegotiation):
    """Errors are JSON, whatever the client accepts (it asks for text/event-stream)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class TurnEvents(APIView):
    content_negotiation_class = JsonOnly

    @extend_schema(
        operation_id="turns_events",
        summary="A turn's events, streamed",
        description=(
            "Server-Sent Events: each event's `id` is `<seq>-<epoch>`, its `event` the type, "
            "its `data` the event as JSON. Ends after the turn's terminal event. "
            "`Last-Event-ID` resumes after that seq; an `error` event with code "
            "`resync_required` says the turn follows from its start instead, one with "
            "`dependency_unavailable` that the stream broke off."
        ),
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                required=False,
                pattern=LAST_EVENT_ID.pattern,
                description="Resume after this event.",
            )
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response={
                    "type": "object",
                    "description": "One event; `data` is the event as JSON.",
                    "properties": {
                        "id": {"type": "string"},
                        "event": {"type": "string", "enum": sorted([*EVENT_TYPES, "error"])},
                        "data": {"type": "string"},
                    },
                    "required": ["event", "data"],
                },
                description="The event stream.",
            )
        },
    )
    def get(self, request: Request, conversation_id, number: int) -> LoopResponse:
        raw = request.headers.get("Last-Event-ID", "0").strip() or "0"
        last = LAST_EVENT_ID.fullmatch(raw)
        if last is None:
            raise InvalidInput(
                "Last-Event-ID must be an id this stream sent.",
                details={"Last-Event-ID": ["<seq>-<epoch> or a seq, e.g. 12-3fa9c2d1."]},
            )
        turn = selectors.turn_visible_to(request.user, conversation_id, number)
        if turn is None:
            raise NotFound()
        response = LoopResponse(
            _sse_body(turn.pk, int(last[1]), last[2]),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
