"""Helpers of the turn-engine tests: factories, submitting, observing, SSE requests.

Fixtures live in tests/turn_fixtures.py (loaded with `pytest_plugins`). The test Redis
database is flushed before every test (tests/conftest.py clears the Redis cache), so event
buffers, locks and the Celery queue start empty.
"""

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client, TestCase
from django.utils import timezone

from agents.models import Agent
from agents.providers import LocalModel, ModelRequest, TextDelta
from conversations.events import event_buffer
from conversations.models import Conversation, Turn
from conversations.services import Submission, conversation_create, turn_submit
from infrastructure.event_loops import run_sync
from infrastructure.loop_responses import LoopResponse
from infrastructure.off_loop import INLINE
from tests.llm_helpers import events_of

SUPPORT_PROMPT = "You are the support agent of a small shop. Answer briefly and factually."
CELERY_QUEUE = "celery"

# Tests whose turns run on other threads or processes: those only see committed rows. The
# serialized rollback restores what the migrations created (roles, the local model) that
# the flush after each such test deletes.
TRANSACTIONAL = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@cache
def redis_client() -> redis.Redis:
    """Our own connection to the Redis of the event buffers and the Celery broker."""
    return redis.Redis.from_url(settings.REDIS_URL)


# --- factories ---------------------------------------------------------------------------


def agent_make(slug: str = "support", **fields) -> Agent:
    fields.setdefault("name", slug.replace("-", " ").capitalize())
    fields.setdefault("system_prompt", SUPPORT_PROMPT)
    fields.setdefault("anti_echo", Agent.AntiEcho.OFF)
    return Agent.objects.create(slug=slug, **fields)


def conversation_make(*, owner, agent: Agent, status: str = Conversation.Status.ACTIVE):
    conversation = conversation_create(owner=owner, agent_slug=agent.slug)
    if status != Conversation.Status.ACTIVE:
        Conversation.objects.filter(pk=conversation.pk).update(status=status)
        conversation.refresh_from_db()
    return conversation


# --- submitting and running turns ------------------------------------------------------------


def submit(conversation: Conversation, text: str, turn_id: str | None = None) -> Submission:
    """turn_submit inside a test transaction, with its after-commit work (the turn.accepted
    event and the enqueue) run as a real commit would run it."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        submission = turn_submit(conversation_id=conversation.pk, text=text, turn_id=turn_id)
    return submission


def local_model_reply(*messages: tuple[str, str]) -> str:
    """What the built-in local model answers to these (role, content) messages."""
    request = ModelRequest(
        model="local", messages=[{"role": role, "content": content} for role, content in messages]
    )
    events = events_of(LocalModel(token_delay_s=0), request)
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def words(text: str) -> int:
    return len(text.split())


def expire_lease(turn: Turn) -> None:
    Turn.objects.filter(pk=turn.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


# --- observing ---------------------------------------------------------------------------------


def buffered(turn: Turn) -> list[dict]:
    """The turn's buffered events, without their epoch, which they all share."""
    read = run_sync(event_buffer().read, turn.pk, 0)
    assert {event.pop("epoch") for event in read.events} <= {read.epoch}
    return read.events


def types_of(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]


def delta_text(events: list[dict]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "turn.delta")


def seqs(events: list[dict]) -> list[int]:
    return [event["seq"] for event in events]


@dataclass(frozen=True)
class Footprint:
    """What a turn submission leaves behind: rows, event buffers and queued tasks."""

    turns: int
    event_keys: frozenset[bytes]
    enqueued: int


def footprint() -> Footprint:
    client = redis_client()
    return Footprint(
        turns=Turn.objects.count(),
        event_keys=frozenset(client.scan_iter(match="{orchestra:turn:*")),
        enqueued=client.llen(CELERY_QUEUE),
    )


def wait_until(
    predicate: Callable[[], object], *, timeout: float = 15.0, interval: float = 0.02, what=""
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {what or predicate}.")


def wait_for_turn(turn: Turn, *statuses: str, timeout: float = 15.0) -> Turn:
    """The turn once it has one of `statuses` (by default: any terminal one).

    A worker commits the turn's end before it publishes the terminal event, so waiting for
    a terminal status also waits for the event stream to have ended.
    """
    statuses = statuses or tuple(Turn.TERMINAL)
    stream_must_end = set(statuses) <= set(Turn.TERMINAL)

    def reached():
        found = Turn.objects.filter(pk=turn.pk, status__in=statuses).select_related("agent")
        found = found.first()
        if found and stream_must_end and run_sync(event_buffer().end, turn.pk) is None:
            return None
        return found

    return wait_until(
        reached, timeout=timeout, what=f"turn {turn.number} to be {'/'.join(statuses)}"
    )


# --- SSE through the ASGI request path --------------------------------------------------------


@dataclass
class SseAnswer:
    status_code: int
    headers: dict
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def frames(self) -> list[dict]:
        """Each event frame as {"id", "seq", "event", "data"} (an `error` frame has no id
        nor seq); keep-alive comments left out."""
        frames = []
        for block in self.body.decode().split("\n\n"):
            if not block or block.startswith(":"):
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            frame_id = fields.get("id")
            frames.append(
                {
                    "id": frame_id,
                    "seq": int(frame_id.split("-")[0]) if frame_id else None,
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
            )
        return frames


def sse_get(
    path: str,
    *,
    api_key: str | None = None,
    last_event_id: str | None = None,
    max_frames: int | None = None,
    timeout: float = 10.0,
) -> SseAnswer:
    """GET an SSE endpoint with Django's test client and read the stream until it ends (or
    `max_frames` frames were read: then the client hangs up, as a dropped connection does).

    The stream runs as the server runs it, on an event loop, with its database work on the
    test's thread (its connection and transaction)."""
    headers = {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = Client().get(path, headers=headers)
    if not isinstance(response, LoopResponse):
        return SseAnswer(response.status_code, dict(response.headers), response.content)

    async def read() -> bytes:
        token = INLINE.set(True)
        chunks = []
        stream = response.loop_body(response)
        try:
            async for chunk in stream:
                chunks.append(chunk)
                frames = sum(
                    chunk.count(b"\nevent: ") + chunk.startswith(b"event: ") for chunk in chunks
                )
                if max_frames is not None and frames >= max_frames:
                    break
        finally:
            await stream.aclose()
            INLINE.reset(token)
        return b"".join(chunks)

    async def read_in_time() -> bytes:
        return await asyncio.wait_for(read(), timeout)

    body = async_to_sync(read_in_time)()
    if max_frames is not None:  # a client that left mid-chunk had read only this much
        blocks = [block for block in body.split(b"\n\n") if block]
        kept = [block for block in blocks if not block.startswith(b":")][:max_frames]
        body = b"".join(block + b"\n\n" for block in kept)
    return SseAnswer(response.status_code, dict(response.headers), body)


def events_path(turn: Turn) -> str:
    return f"/api/v1/conversations/{turn.conversation_id}/turns/{turn.number}/events/"
