"""Turn events: numbered, buffered per turn, and published to the conversation's group.

Every event of a turn gets the next `seq` (1, 2, 3 …) from the turn's buffer, which also
keeps the events so a client that reconnects resumes right after the last seq it saw.
The buffer refuses events after the terminal one, so a worker that lost a race (its turn
was cancelled, or taken over) can never append to a stream that has ended.

Full stack: a Redis Stream per turn whose entry ids are `<seq>-0`, appended by a Lua
script (seq, append and the terminal mark are one atomic step), bounded in length and
expiring. Embedded: the same in process memory.
"""

import asyncio
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import structlog
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import NoScriptError

from conversations import payloads
from conversations.models import conversation_group
from infrastructure.redis_client import async_client, sync_client

log = structlog.get_logger("orchestra.events")

TERMINAL_TYPES = frozenset({"turn.completed", "turn.failed"})

# ARGV[5] is the appending worker's attempt (0: not a worker, never fenced). An attempt
# older than one that already appended is refused: a worker that lost its turn to a
# newer attempt cannot mix its text into the stream. ARGV[6], with a terminal event, is
# the finished turn as the API shows it ('' when the publisher has none), kept in the
# one-entry "done" stream for the long-poll.
_APPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local attempt = tonumber(ARGV[5])
if attempt > 0 then
  local current = tonumber(redis.call('GET', KEYS[4]) or '0')
  if attempt < current then return 0 end
  if attempt > current then redis.call('SET', KEYS[4], attempt, 'EX', ARGV[4]) end
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[2] == '1' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[4])
  redis.call('XADD', KEYS[5], '1-0', 'seq', seq, 'turn', ARGV[6])
  redis.call('EXPIRE', KEYS[5], ARGV[4])
end
return seq
"""


def _append_args(event: dict, attempt: int, final_turn: dict | None) -> list:
    return [
        json.dumps(event, separators=(",", ":")),
        "1" if event["type"] in TERMINAL_TYPES else "0",
        settings.TURN_EVENTS_MAXLEN,
        settings.TURN_EVENTS_TTL_SECONDS,
        attempt,
        json.dumps(final_turn, separators=(",", ":")) if final_turn is not None else "",
    ]


@dataclass(frozen=True)
class StreamEnd:
    """A turn's stream has ended. `turn`: the finished turn as the API shows it, when the
    worker that finished it put it there (not for a cancelled or abandoned turn)."""

    turn: dict | None = None


def _keys(turn_pk: int) -> list[str]:
    """The turn's keys, in one hash slot: its events, the last seq, the end mark, the
    newest attempt, and a one-entry stream written at the end (for wait_until_ended)."""
    tag = f"{{orchestra:turn:{turn_pk}}}"
    return [f"{tag}:events", f"{tag}:seq", f"{tag}:ended", f"{tag}:attempt", f"{tag}:done"]


class RedisEventBuffer:
    def __init__(self):
        self._append = sync_client().register_script(_APPEND_SCRIPT)

    def append(
        self, turn_pk: int, event: dict, attempt: int = 0, final_turn: dict | None = None
    ) -> int | None:
        args = _append_args(event, attempt, final_turn)
        return int(self._append(keys=_keys(turn_pk), args=args)) or None

    def append_for_group(
        self, turn_pk: int, events: list[dict], attempt: int, group: str, final_turn=None
    ) -> tuple[list[int | None], bool]:
        """Append the events in order (`final_turn` goes with the last), and say whether
        the channel-layer group has members, all in one round trip: when nobody listens,
        the group send (two more round trips) is left out."""
        keys = _keys(turn_pk)
        calls = [
            _append_args(event, attempt, final_turn if event is events[-1] else None)
            for event in events
        ]
        members_key = _group_members_key(group)
        # EVALSHA itself: a Script queued on a pipeline costs a SCRIPT EXISTS round trip.
        # In MULTI/EXEC, so that Redis runs either all or none of them when it has lost
        # its scripts (nobody can load the script in between): none then ran, and they
        # are appended one by one, in order, loading the script again.
        pipe = sync_client().pipeline(transaction=True)
        for args in calls:
            pipe.evalsha(self._append.sha, len(keys), *keys, *args)
        if members_key is not None:
            pipe.exists(members_key)
        answers = pipe.execute(raise_on_error=False)
        seqs, members = answers[: len(calls)], answers[len(calls) :]
        if any(isinstance(seq, NoScriptError) for seq in seqs):
            seqs = [self._append(keys=keys, args=args) for args in calls]
        for answer in answers:
            if isinstance(answer, Exception) and not isinstance(answer, NoScriptError):
                raise answer
        return [int(seq) or None for seq in seqs], bool(members[0]) if members else True

    def has_ended(self, turn_pk: int) -> bool:
        return bool(sync_client().exists(_keys(turn_pk)[2]))

    def has_events(self, turn_pk: int) -> bool:
        return bool(sync_client().exists(_keys(turn_pk)[0]))

    def wait_until_ended(self, turn_pk: int, timeout_s: float) -> StreamEnd | None:
        """The end of the turn's stream, waiting up to `timeout_s` for it (None: not yet):
        one blocking read, however many events come before the end."""
        done = _keys(turn_pk)[4]
        answer = sync_client().xread({done: "0-0"}, block=max(1, int(timeout_s * 1000)))
        if not answer:
            return None
        [(_key, [(_id, fields)])] = answer
        turn = fields.get(b"turn")
        return StreamEnd(json.loads(turn) if turn else None)

    @staticmethod
    def _decode(entries) -> list[dict]:
        events = []
        for entry_id, fields in entries:
            event = json.loads(fields[b"e"])
            event["seq"] = int(entry_id.split(b"-")[0])
            events.append(event)
        return events

    def read(self, turn_pk: int, after_seq: int, timeout_s: float = 0) -> list[dict]:
        key = _keys(turn_pk)[0]
        if timeout_s <= 0:
            return self._decode(sync_client().xrange(key, min=f"({after_seq}-0"))
        answer = sync_client().xread({key: f"{after_seq}-0"}, block=max(1, int(timeout_s * 1000)))
        return self._decode(answer[0][1]) if answer else []

    async def aread(self, turn_pk: int, after_seq: int, timeout_s: float) -> list[dict]:
        client = async_client()
        try:
            answer = await client.xread(
                {_keys(turn_pk)[0]: f"{after_seq}-0"}, block=max(1, int(timeout_s * 1000))
            )
        finally:
            await client.aclose()
        return self._decode(answer[0][1]) if answer else []


def _group_members_key(group: str) -> str | None:
    """Where channels_redis keeps the group's members (a sorted set that exists while the
    group has any), when the channel layer lives on the Redis of the event buffers; else
    None (then every event is sent to the group)."""
    prefix = _group_keys_prefix()
    return None if prefix is None else prefix + group


def _group_keys_prefix() -> str | None:
    layer = settings.CHANNEL_LAYERS.get("default", {})
    config = layer.get("CONFIG", {})
    if layer.get("BACKEND") != "channels_redis.core.RedisChannelLayer":
        return None
    if config.get("hosts") != [settings.REDIS_URL]:
        return None
    return f"{config.get('prefix', 'asgi')}:group:"


@dataclass
class _MemoryStream:
    events: list[dict] = field(default_factory=list)
    seq: int = 0
    attempt: int = 0
    ended: bool = False
    final_turn: dict | None = None
    touched: float = field(default_factory=time.monotonic)
    condition: threading.Condition = field(default_factory=threading.Condition)
    waiters: list = field(default_factory=list)  # (loop, asyncio.Event)


class MemoryEventBuffer:
    """The embedded mode's buffer: same contract, process memory, bounded and expiring."""

    def __init__(self):
        self._streams: OrderedDict[int, _MemoryStream] = OrderedDict()
        self._mutex = threading.Lock()

    def _stream(self, turn_pk: int, create: bool = False) -> _MemoryStream | None:
        with self._mutex:
            stream = self._streams.get(turn_pk)
            if stream is None and create:
                stream = self._streams[turn_pk] = _MemoryStream()
                self._expire_old()
            return stream

    def _expire_old(self) -> None:
        horizon = time.monotonic() - settings.TURN_EVENTS_TTL_SECONDS
        while self._streams:
            oldest_pk, oldest = next(iter(self._streams.items()))
            if oldest.touched >= horizon:
                break
            del self._streams[oldest_pk]

    def append(
        self, turn_pk: int, event: dict, attempt: int = 0, final_turn: dict | None = None
    ) -> int | None:
        stream = self._stream(turn_pk, create=True)
        with stream.condition:
            if stream.ended or (attempt and attempt < stream.attempt):
                return None
            stream.attempt = max(stream.attempt, attempt)
            stream.seq += 1
            stream.events.append({**event, "seq": stream.seq})
            del stream.events[: -settings.TURN_EVENTS_MAXLEN]
            stream.ended = event["type"] in TERMINAL_TYPES
            if stream.ended:
                stream.final_turn = final_turn
            stream.touched = time.monotonic()
            stream.condition.notify_all()
            waiters, stream.waiters = stream.waiters, []
        for loop, ready in waiters:
            loop.call_soon_threadsafe(ready.set)
        return stream.seq

    def append_for_group(
        self, turn_pk: int, events: list[dict], attempt: int, group: str, final_turn=None
    ) -> tuple[list[int | None], bool]:
        seqs = [
            self.append(turn_pk, event, attempt, final_turn if event is events[-1] else None)
            for event in events
        ]
        return seqs, True

    def has_ended(self, turn_pk: int) -> bool:
        stream = self._stream(turn_pk)
        return bool(stream and stream.ended)

    def has_events(self, turn_pk: int) -> bool:
        return self._stream(turn_pk) is not None

    def wait_until_ended(self, turn_pk: int, timeout_s: float) -> StreamEnd | None:
        stream = self._stream(turn_pk, create=True)
        with stream.condition:
            if not stream.condition.wait_for(lambda: stream.ended, timeout_s):
                return None
            return StreamEnd(stream.final_turn)

    @staticmethod
    def _after(stream: _MemoryStream, after_seq: int) -> list[dict]:
        return [dict(e) for e in stream.events if e["seq"] > after_seq]

    def read(self, turn_pk: int, after_seq: int, timeout_s: float = 0) -> list[dict]:
        stream = self._stream(turn_pk, create=timeout_s > 0)
        if stream is None:
            return []
        with stream.condition:
            if timeout_s > 0 and stream.seq <= after_seq:
                stream.condition.wait(timeout_s)
            return self._after(stream, after_seq)

    async def aread(self, turn_pk: int, after_seq: int, timeout_s: float) -> list[dict]:
        stream = self._stream(turn_pk, create=True)
        ready = asyncio.Event()
        with stream.condition:
            if stream.seq > after_seq:
                return self._after(stream, after_seq)
            stream.waiters.append((asyncio.get_running_loop(), ready))
        try:
            await asyncio.wait_for(ready.wait(), timeout_s)
        except TimeoutError:
            return []
        with stream.condition:
            return self._after(stream, after_seq)


_buffer = None
_buffer_mutex = threading.Lock()


def event_buffer() -> RedisEventBuffer | MemoryEventBuffer:
    global _buffer
    with _buffer_mutex:
        if _buffer is None:
            _buffer = RedisEventBuffer() if settings.REDIS_URL else MemoryEventBuffer()
        return _buffer


class LayerSender:
    """Sends to channel-layer groups from any thread, in order, on one event loop.

    In the web process the loop is the server's own (bound by the ASGI application on its
    first call), which the in-memory layer requires; elsewhere (Celery workers, tests) it
    is a private loop thread.
    """

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._mutex = threading.Lock()

    def bind_running_loop(self) -> None:
        """Call from inside the server's event loop."""
        with self._mutex:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
                self._queue = asyncio.Queue()
                self._loop.create_task(self._drain(self._queue))

    async def _begin(self) -> asyncio.Queue:
        queue = asyncio.Queue()
        asyncio.get_running_loop().create_task(self._drain(queue))
        return queue

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
        with self._mutex:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="orchestra-layer-sender", daemon=True
                ).start()
                self._queue = asyncio.run_coroutine_threadsafe(self._begin(), loop).result(5)
                self._loop = loop
            return self._loop, self._queue

    def send(self, group: str, message: dict) -> None:
        loop, queue = self._ensure()
        loop.call_soon_threadsafe(queue.put_nowait, (group, message))

    @staticmethod
    async def _drain(queue: asyncio.Queue) -> None:
        layer = get_channel_layer()
        while True:
            group, message = await queue.get()
            try:
                await layer.group_send(group, message)
            except Exception:
                log.warning("events.group_send_failed", group=group, exc_info=True)


layer_sender = LayerSender()


def publish(
    *, turn, event_type: str, attempt: int = 0, final_turn: dict | None = None, **data
) -> dict | None:
    """Append an event to the turn's buffer and send it to the conversation's group.

    A worker passes its attempt number, which fences out older attempts, and with the
    terminal event the finished turn as the API shows it (`final_turn`), for the
    long-poll. Returns the event with its seq, or None when the turn's stream has ended
    or belongs to a newer attempt.
    """
    published = publish_events(
        turn=turn, events=[(event_type, data)], attempt=attempt, final_turn=final_turn
    )
    return published[0] if published else None


def publish_events(
    *, turn, events: list[tuple[str, dict]], attempt: int = 0, final_turn: dict | None = None
) -> list[dict]:
    """publish() for several events (type, data) in order, in one round trip to the
    buffer; `final_turn` goes with the last. Returns those the buffer took, with their
    seqs: none after a refused one (the stream has ended or has a newer attempt)."""
    events = [payloads.turn_event(turn, event_type, **data) for event_type, data in events]
    group = conversation_group(turn.conversation_id)
    seqs, listened = event_buffer().append_for_group(turn.pk, events, attempt, group, final_turn)
    published = []
    for event, seq in zip(events, seqs, strict=True):
        if seq is None:
            break
        event["seq"] = seq
        published.append(event)
        # A listener that joins after this check reads the event from the buffer, as it
        # reads every event from before it joined (it resumes after the last seq it saw).
        if listened:
            layer_sender.send(group, {"type": "turn.event", "event": event})
    return published


def publish_conversation_state(conversation) -> None:
    """Tell the conversation's group its status or agent changed (no turn buffer: it is not
    a turn event)."""
    layer_sender.send(
        conversation.group_name,
        {
            "type": "conversation.state",
            "event": {
                "type": "conversation.state",
                "conversation": str(conversation.id),
                "status": conversation.status,
                "agent": conversation.agent.slug,
            },
        },
    )
