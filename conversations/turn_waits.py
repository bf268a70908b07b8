"""Waiting on the event loop for a turn to end: `?wait=` and `Prefer: wait=`.

A waiting client costs a follower of the turn's buffer (woken by the append that ends its
stream) and an entry in the process's database sweep, which every few seconds asks, in
one query for all waiting clients, which of their turns have ended: the database has the
last word for an end that was committed but never made it to the stream. When Redis
fails, the sweep alone keeps the wait going.
"""

import asyncio
import contextlib
import weakref

import structlog
from redis.exceptions import RedisError

from conversations import payloads
from conversations.events import event_buffer
from conversations.models import Turn
from infrastructure.off_loop import off_loop

log = structlog.get_logger("orchestra.turns")

SWEEP_EVERY_S = 2.0


async def turn_when_ended(turn_pk: int, wait_s: float) -> dict | None:
    """The turn as the API shows it once it has ended, or None if `wait_s` passed first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    sweep = _sweep()
    with sweep.watch(turn_pk) as swept:
        try:
            async with event_buffer().follow(turn_pk, ends_only=True) as follower:
                while True:
                    follower.changed.clear()
                    end = await event_buffer().end(turn_pk)
                    if end is not None:
                        return end.turn or await off_loop(_turn_payload, turn_pk)
                    if await _first(follower.changed, swept, deadline - loop.time()):
                        if swept.is_set():
                            return await off_loop(_turn_payload, turn_pk)
                    else:
                        return None
        except RedisError:
            log.warning("turn.wait_without_redis", turn=turn_pk, exc_info=True)
        # Without the buffer: the database sweep alone says when the turn ends.
        if await _first(swept, swept, deadline - loop.time()):
            return await off_loop(_turn_payload, turn_pk)
        return None


async def _first(one: asyncio.Event, other: asyncio.Event, timeout: float) -> bool:
    """Whether either event is set within `timeout` seconds."""
    if one.is_set() or other.is_set():
        return True
    if timeout <= 0:
        return False
    waits = {asyncio.ensure_future(one.wait()), asyncio.ensure_future(other.wait())}
    done, pending = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
    for task in pending:
        task.cancel()
    return bool(done)


def _turn_payload(turn_pk: int) -> dict:
    return payloads.turn_payload(Turn.objects.get(pk=turn_pk))


class _Sweep:
    """The turns this loop's clients wait for; every SWEEP_EVERY_S one query finds those
    that ended and wakes their waiters."""

    def __init__(self):
        self._waiting: dict[int, set[asyncio.Event]] = {}
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    @contextlib.contextmanager
    def watch(self, turn_pk: int):
        ended = asyncio.Event()
        self._waiting.setdefault(turn_pk, set()).add(ended)
        try:
            yield ended
        finally:
            events = self._waiting.get(turn_pk, set())
            events.discard(ended)
            if not events:
                self._waiting.pop(turn_pk, None)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            if not self._waiting:
                continue
            try:
                ended = await off_loop(_ended_among, list(self._waiting))
            except Exception:
                log.warning("turn.wait_sweep_failed", exc_info=True)
                continue
            for turn_pk in ended:
                for event in self._waiting.get(turn_pk, ()):
                    event.set()


def _ended_among(turn_pks: list[int]) -> list[int]:
    return list(
        Turn.objects.filter(pk__in=turn_pks, status__in=Turn.TERMINAL).values_list("pk", flat=True)
    )


_sweeps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sweep() -> _Sweep:
    loop = asyncio.get_running_loop()
    sweep = _sweeps.get(loop)
    if sweep is None:
        sweep = _sweeps[loop] = _Sweep()
    return sweep
