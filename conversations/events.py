"""Turn events: numbered, buffered per turn, sent to the conversation's group, and followed
by the processes whose clients wait for them.

Every event of a turn gets the next `seq` (1, 2, 3 …) from the turn's buffer, which keeps
the events so that a client that reconnects resumes right after the last seq it saw. The
buffer refuses events after the terminal one, and those of an attempt older than one that
already appended, so a worker that lost its turn can never append to its stream. Each
buffer has an `epoch`, new when the buffer is new: after Redis lost a buffer (a restart),
its events are numbered from 1 again under another epoch, and a client resuming across
that is told so instead of missing events.

Full stack: a Redis Stream per turn whose entry ids are `<seq>-0`, appended by a Lua script
(seq, append, the end mark and the wake-up of followers in one atomic step), bounded and
expiring; each process follows the turns its clients wait for on one pub/sub connection
(RedisFollowers). Embedded: the same in process memory.
"""

import asyncio
import contextlib
import json
import random
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from conversations import payloads
from conversations.models import conversation_group
from infrastructure import event_loops
from infrastructure.redis_client import async_client

log = structlog.get_logger("orchestra.events")

TERMINAL_TYPES = frozenset({"turn.completed", "turn.failed"})
WAKE_CHANNEL = "orchestra:turn-events:{}"

# KEYS: events, seq, ended, newest attempt, done, epoch. ARGV: the event, whether it is
# terminal, max length, ttl, the appending worker's attempt (0: not a worker, never
# fenced), the finished turn ('' if none; kept in the one-entry "done" stream for waits),
# an epoch for a new buffer, the channel that wakes the followers. Returns {seq, epoch},
# seq 0 when refused.
_APPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {0, ''} end
local attempt = tonumber(ARGV[5])
if attempt > 0 then
  local current = tonumber(redis.call('GET', KEYS[4]) or '0')
  if attempt < current then return {0, ''} end
  if attempt > current then redis.call('SET', KEYS[4], attempt, 'EX', ARGV[4]) end
end
local seq = redis.call('INCR', KEYS[2])
local epoch = redis.call('GET', KEYS[6])
if seq == 1 or not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[6], epoch)
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', ARGV[1], 'ep', epoch)
for i = 1, 2 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
redis.call('EXPIRE', KEYS[6], ARGV[4])
local wake = seq
if ARGV[2] == '1' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[4])
  redis.call('XADD', KEYS[5], '1-0', 'seq', seq, 'turn', ARGV[6], 'ep', epoch)
  redis.call('EXPIRE', KEYS[5], ARGV[4])
  wake = 'end:' .. seq
end
redis.call('PUBLISH', ARGV[8], wake)
return {seq, epoch}
"""


@dataclass(frozen=True)
class StreamEnd:
    """A turn's stream has ended, with its event `seq`. `turn`: the finished turn as the
    API shows it, when the worker that finished it put it there (not for a cancelled or
    abandoned turn)."""

    seq: int
    turn: dict | None = None


@dataclass(frozen=True)
class Read:
    """Events after a seq, the epoch of the buffer they came from (None: no buffer) and
    the buffer's last seq."""

    epoch: str | None
    events: list[dict]
    last_seq: int = 0


@dataclass(eq=False)
class Follower:
    """Woken (`changed` set) when its turn's buffer changes; with `ends_only`, only when
    the turn's stream ends."""

    ends_only: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def _keys(turn_pk: int) -> list[str]:
    """The turn's keys, in one hash slot: its events, the last seq, the end mark, the newest
    attempt, the one-entry stream written at the end, and the buffer's epoch."""
    tag = f"{{orchestra:turn:{turn_pk}}}"
    return [f"{tag}:{part}" for part in ("events", "seq", "ended", "attempt", "done", "epoch")]


def _new_epoch() -> str:
    # Only needs to differ from the epoch of a buffer Redis lost: no cryptographic random
    # (os.urandom was 4 % of a worker's samples at one call per event).
    return f"{random.getrandbits(32):08x}"


def _append_args(
    turn_pk: int, event: dict, attempt: int, final_turn: dict | None, epoch: str
) -> list:
    return [
        json.dumps(event, separators=(",", ":")),
        "1" if event["type"] in TERMINAL_TYPES else "0",
        settings.TURN_EVENTS_MAXLEN,
        settings.TURN_EVENTS_TTL_SECONDS,
        attempt,
        json.dumps(final_turn, separators=(",", ":")) if final_turn is not None else "",
        epoch,
        WAKE_CHANNEL.format(turn_pk),
    ]


class RedisEventBuffer:
    async def append(
        self, turn_pk: int, events: list[dict], attempt: int, group: str, final_turn=None
    ) -> tuple[list[int | None], str, bool]:
        """Append the events in order (`final_turn` goes with the last) and say whether the
        channel-layer group has members, in one round trip: nobody listening costs no
        group send. Returns (each event's seq or None if refused, the epoch, listened)."""
        client = async_client()
        script = _append_script(client)
        keys = _keys(turn_pk)
        epoch = _new_epoch()  # the buffer's, if these events make it
        calls = [
            _append_args(
                turn_pk, event, attempt, final_turn if event is events[-1] else None, epoch
            )
            for event in events
        ]
        members_key = _group_members_key(group)
        # EVALSHA in MULTI/EXEC: if Redis lost its scripts, none of them ran, and they are
        # appended one by one, in order, loading the script again.
        pipe = client.pipeline(transaction=True)
        for args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if members_key is not None:
            pipe.exists(members_key)
        answers = await pipe.execute(raise_on_error=False)
        results, members = answers[: len(calls)], answers[len(calls) :]
        if any(isinstance(result, NoScriptError) for result in results):
            results = [await script(keys=keys, args=args) for args in calls]
        for answer in answers:
            if isinstance(answer, Exception) and not isinstance(answer, NoScriptError):
                raise answer
        seqs = [int(seq) or None for seq, _ in results]
        epoch = next((epoch.decode() for seq, epoch in results if int(seq)), "")
        return seqs, epoch, bool(members[0]) if members else True

    async def read(self, turn_pk: int, after_seq: int) -> Read:
        keys = _keys(turn_pk)
        pipe = async_client().pipeline(transaction=True)
        pipe.xrange(keys[0], min=f"({after_seq}-0")
        pipe.get(keys[5])
        pipe.get(keys[1])
        entries, epoch, last_seq = await pipe.execute()
        events = []
        for entry_id, fields in entries:
            event = json.loads(fields[b"e"])
            event["seq"] = int(entry_id.split(b"-")[0])
            event["epoch"] = fields[b"ep"].decode()
            events.append(event)
        return Read(epoch.decode() if epoch else None, events, int(last_seq or 0))

    async def end(self, turn_pk: int) -> StreamEnd | None:
        entries = await async_client().xrange(_keys(turn_pk)[4], count=1)
        if not entries:
            return None
        fields = entries[0][1]
        turn = fields.get(b"turn")
        return StreamEnd(int(fields[b"seq"]), json.loads(turn) if turn else None)

    async def has_events(self, turn_pk: int) -> bool:
        return bool(await async_client().exists(_keys(turn_pk)[0]))

    def follow(self, turn_pk: int, *, ends_only: bool = False):
        return _followers().follow(turn_pk, ends_only=ends_only)


_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _append_script(client):
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(_APPEND_SCRIPT)
    return script


def _group_members_key(group: str) -> str | None:
    """Where channels_redis keeps the group's members (a sorted set that exists while the
    group has any), when the channel layer lives on the Redis of the event buffers; else
    None (then every event is sent to the group)."""
    layer = settings.CHANNEL_LAYERS.get("default", {})
    config = layer.get("CONFIG", {})
    if layer.get("BACKEND") != "channels_redis.core.RedisChannelLayer":
        return None
    if config.get("hosts") != [settings.REDIS_URL]:
        return None
    return f"{config.get('prefix', 'asgi')}:group:{group}"


class RedisFollowers:
    """The turns this process's clients wait for, followed on one pub/sub connection of
    the event loop: every append wakes the followers of its turn. No thread and no
    connection per client. If the connection breaks, every follower is woken (to read
    again) and the subscriptions are made again."""

    def __init__(self):
        self._followers: dict[int, set[Follower]] = {}
        self._subscribed: dict[str, asyncio.Event] = {}
        self._pubsub = None
        self._ready = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    @contextlib.asynccontextmanager
    async def follow(self, turn_pk: int, *, ends_only: bool = False) -> AsyncIterator[Follower]:
        """A follower of the turn, subscribed before it is given: read the buffer after
        entering, and every append after that read wakes it."""
        follower = Follower(ends_only=ends_only)
        channel = WAKE_CHANNEL.format(turn_pk)
        first = turn_pk not in self._followers
        self._followers.setdefault(turn_pk, set()).add(follower)
        try:
            if first:
                self._subscribed[channel] = asyncio.Event()
                await self._connected()
                await self._pubsub.subscribe(channel)
            await self._subscribed[channel].wait()
            yield follower
        finally:
            followers = self._followers.get(turn_pk, set())
            followers.discard(follower)
            if not followers:
                self._followers.pop(turn_pk, None)
                self._subscribed.pop(channel, None)
                with contextlib.suppress(RedisError, RuntimeError):
                    await self._pubsub.unsubscribe(channel)

    async def _connected(self) -> None:
        """Wait for the pub/sub connection, as long as a Redis call may take."""
        try:
            await asyncio.wait_for(self._ready.wait(), settings.REDIS_SOCKET_TIMEOUT_SECONDS)
        except TimeoutError:
            raise RedisConnectionError("No pub/sub connection to Redis.") from None

    async def _read_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._connect()
                if backoff > 0.1:
                    log.info("events.followers_reconnected")
                backoff = 0.1
                while True:
                    message = await self._pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                if backoff == 0.1:  # once per outage
                    log.warning("events.followers_disconnected", error=repr(error))
                self._ready.clear()
                self._wake_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _connect(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = async_client().pubsub()
        # A channel of its own keeps the connection subscribed, and so readable.
        channels = [f"orchestra:followers:{uuid.uuid4().hex}", *self._subscribed]
        for event in self._subscribed.values():
            event.clear()
        await self._pubsub.subscribe(*channels)
        self._ready.set()
        self._wake_all()  # whatever was appended meanwhile: read it again

    def _dispatch(self, message: dict) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            if channel in self._subscribed:
                self._subscribed[channel].set()
            return
        if message["type"] != "message":
            return
        ended = message["data"].startswith(b"end:")
        turn_pk = int(channel.rsplit(":", 1)[1])
        for follower in self._followers.get(turn_pk, ()):
            if ended or not follower.ends_only:
                follower.changed.set()

    def _wake_all(self) -> None:
        for followers in self._followers.values():
            for follower in followers:
                follower.changed.set()


_followers_by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _followers() -> RedisFollowers:
    loop = asyncio.get_running_loop()
    followers = _followers_by_loop.get(loop)
    if followers is None:
        followers = _followers_by_loop[loop] = RedisFollowers()
    return followers


@dataclass
class _MemoryStream:
    events: list[dict] = field(default_factory=list)
    seq: int = 0
    attempt: int = 0
    ended: bool = False
    final_turn: dict | None = None
    epoch: str = field(default_factory=_new_epoch)
    touched: float = field(default_factory=time.monotonic)
    followers: list = field(default_factory=list)  # (loop, Follower)


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

    async def append(
        self, turn_pk: int, events: list[dict], attempt: int, group: str, final_turn=None
    ) -> tuple[list[int | None], str, bool]:
        stream = self._stream(turn_pk, create=True)
        seqs: list[int | None] = []
        with self._mutex:
            for event in events:
                if stream.ended or (attempt and attempt < stream.attempt):
                    seqs.append(None)
                    continue
                stream.attempt = max(stream.attempt, attempt)
                stream.seq += 1
                stream.events.append({**event, "seq": stream.seq, "epoch": stream.epoch})
                del stream.events[: -settings.TURN_EVENTS_MAXLEN]
                stream.ended = event["type"] in TERMINAL_TYPES
                if stream.ended:
                    stream.final_turn = final_turn
                seqs.append(stream.seq)
            stream.touched = time.monotonic()
            followers = list(stream.followers)
        for loop, follower in followers:
            if stream.ended or not follower.ends_only:
                loop.call_soon_threadsafe(follower.changed.set)
        return seqs, stream.epoch, True

    async def read(self, turn_pk: int, after_seq: int) -> Read:
        stream = self._stream(turn_pk)
        if stream is None:
            return Read(None, [])
        with self._mutex:
            events = [dict(e) for e in stream.events if e["seq"] > after_seq]
            return Read(stream.epoch if stream.seq else None, events, stream.seq)

    async def end(self, turn_pk: int) -> StreamEnd | None:
        stream = self._stream(turn_pk)
        return StreamEnd(stream.seq, stream.final_turn) if stream and stream.ended else None

    async def has_events(self, turn_pk: int) -> bool:
        return self._stream(turn_pk) is not None

    @contextlib.asynccontextmanager
    async def follow(self, turn_pk: int, *, ends_only: bool = False) -> AsyncIterator[Follower]:
        stream = self._stream(turn_pk, create=True)
        entry = (asyncio.get_running_loop(), Follower(ends_only=ends_only))
        with self._mutex:
            stream.followers.append(entry)
        try:
            yield entry[1]
        finally:
            with self._mutex:
                stream.followers.remove(entry)


_buffer = None
_buffer_mutex = threading.Lock()


def event_buffer() -> RedisEventBuffer | MemoryEventBuffer:
    global _buffer
    with _buffer_mutex:
        if _buffer is None:
            _buffer = RedisEventBuffer() if settings.REDIS_URL else MemoryEventBuffer()
        return _buffer


class LayerSender:
    """Sends to channel-layer groups from any thread or loop, in order, on the io loop
    (the server's in a web process: the in-memory layer lives there)."""

    def __init__(self):
        self._queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._mutex = threading.Lock()

    def send(self, group: str, message: dict) -> None:
        loop = event_loops.io_loop()
        loop.call_soon_threadsafe(self._put, loop, (group, message))

    def _put(self, loop, item) -> None:
        """On the io loop: queue the send; the first one starts the loop's sender task."""
        with self._mutex:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = asyncio.Queue()
                loop.create_task(self._drain(queue))
        queue.put_nowait(item)

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


async def publish_events(
    *, turn, events: list[tuple[str, dict]], attempt: int = 0, final_turn: dict | None = None
) -> list[dict]:
    """Append events (type, data) of the turn to its buffer, in order, in one round trip,
    and send them to the conversation's group. A worker passes its attempt, which fences
    out older attempts, and with the terminal event the finished turn as the API shows it
    (`final_turn`, for waits). Returns those the buffer took, with their seq and epoch:
    none after a refused one (the stream has ended or has a newer attempt)."""
    events_out = [payloads.turn_event(turn, event_type, **data) for event_type, data in events]
    group = conversation_group(turn.conversation_id)
    seqs, epoch, listened = await event_buffer().append(
        turn.pk, events_out, attempt, group, final_turn
    )
    published = []
    for event, seq in zip(events_out, seqs, strict=True):
        if seq is None:
            break
        event["seq"], event["epoch"] = seq, epoch
        published.append(event)
        # A listener that joins after this check reads the event from the buffer, as it
        # reads every event from before it joined (it resumes after the last seq it saw).
        if listened:
            layer_sender.send(group, {"type": "turn.event", "event": event})
    return published


def publish(*, turn, event_type: str, **data) -> dict | None:
    """One event, from sync code (a submission, a cancellation, recovery). The event with
    its seq, or None when the turn's stream has ended."""
    published = event_loops.run_sync(
        publish_events, turn=turn, events=[(event_type, data)], timeout=10
    )
    return published[0] if published else None


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
