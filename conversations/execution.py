"""Turn execution: whoever holds a conversation's lock runs its turns in number order.

A submission hands "run conversation X" to a worker (conversations/dispatch.py), whose
runner (conversations/runner.py) drains it on an event loop: the model call streams there,
so one process keeps hundreds of turns in flight, and the database work runs off the loop
on the process's bounded pool (infrastructure/off_loop.py). The drain takes the
conversation's lock or, if another worker holds it, leaves: that worker looks for queued
turns again after releasing the lock, so a turn committed while it was busy is never
stranded.
"""

import asyncio
import contextvars
import time
from datetime import UTC, datetime

import structlog
from asgiref.sync import async_to_sync
from django import db
from django.conf import settings
from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents import snapshot
from agents.models import Agent
from agents.providers.base import CallbackError, StreamAborted
from agents.router import AllModelsFailed, ModelCall
from agents.runtime import (
    SINK_MESSAGES,
    AgentOutcome,
    RuntimeCallbacks,
    Step,
    StepLimitExceeded,
    run_agent,
)
from billing.services import usage_record_create
from conversations import hot_path_sql, metrics, payloads
from conversations.echo import find_echo
from conversations.events import event_buffer, publish_events
from conversations.locks import acquire_conversation_lock
from conversations.models import Conversation, Turn, TurnStep, text_digest
from conversations.selectors import pending_statuses, recent_replies
from conversations.services import (
    conversation_apply_sink,
    turn_claim_next,
    turn_extend_lease,
    turn_finish,
)
from infrastructure import off_loop as off_loop_module
from infrastructure.off_loop import off_loop
from infrastructure.redis_client import close_async_client

log = structlog.get_logger("orchestra.turns")

HISTORY_TURNS = 20
# A service the turn needs did not answer: the attempt is given up, not failed, so that
# recovery runs the turn again once its lease ends (as after a lost worker).
DEPENDENCY_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    db.OperationalError,
    db.InterfaceError,
)


async def drain(conversation_id) -> int:
    """Run the conversation's queued turns, in order, one per hold of its lock. Returns
    how many turns this call ran."""
    ran = 0
    while True:
        lock = await acquire_conversation_lock(conversation_id)
        if lock is None:
            return ran
        heartbeat = Heartbeat(lock)
        try:
            turn = await off_loop(turn_claim_next, conversation_id=conversation_id)
            if turn is not None:
                heartbeat.watch(turn)
                await execute_turn(turn, heartbeat)
                ran += 1
        finally:
            heartbeat.stop()
            await lock.release()
        # Another turn may be queued: one submitted while this one ran, or committed after
        # the claim and before the release, whose own job found the lock taken. A turn
        # still processing belongs to another attempt; recovery deals with it.
        pending = await off_loop(pending_statuses, conversation_id)
        if Turn.Status.QUEUED not in pending or Turn.Status.PROCESSING in pending:
            return ran


def drain_conversation(conversation_id) -> int:
    """drain() from sync code without a loop (tests, commands): on a private loop, with
    the database work on the calling thread (its connection and transaction)."""
    return async_to_sync(_drain_inline)(conversation_id)


async def _drain_inline(conversation_id) -> int:
    token = off_loop_module.INLINE.set(True)
    try:
        return await drain(conversation_id)
    finally:
        off_loop_module.INLINE.reset(token)
        await close_async_client()


class Heartbeat:
    """Renews a held conversation lock, and the current turn's lease, every third of the
    lease while turns run: a task on the loop, no thread.

    `lock_lost`: the lock expired or was taken over, so this worker must stop draining.
    A lease that could not be renewed concerns only the turn (and attempt) it was for.
    """

    def __init__(self, lock):
        self._lock = lock
        self._turn: Turn | None = None
        self._lost_attempt: tuple[int, int] | None = None
        self._failures = 0
        self.lock_lost = False
        self._task = asyncio.get_running_loop().create_task(
            self._beat_forever(), context=contextvars.copy_context()
        )

    def watch(self, turn: Turn | None) -> None:
        self._turn = turn

    def lost(self, turn: Turn) -> bool:
        return self.lock_lost or self._lost_attempt == (turn.pk, turn.attempt)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.TURN_LEASE_SECONDS / 3)
            await self.beat()

    async def beat(self) -> None:
        try:
            await self._renew()
            self._failures = 0
        except Exception:
            # Redis or the database did not answer. Two misses in a row leave too
            # little of the lease to trust: stop, rather than let recovery hand the
            # turn to another worker while this one still runs it.
            self._failures += 1
            log.warning("turn.heartbeat_failed", failures=self._failures, exc_info=True)
            if self._failures >= 2:
                self.lock_lost = True

    async def _renew(self) -> None:
        turn = self._turn
        if not await self._lock.extend():
            self.lock_lost = True
            log.warning("turn.lock_lost")
        # A turn that ended meanwhile has no lease to renew: that is no loss.
        elif (
            turn is not None
            and not await off_loop(turn_extend_lease, turn=turn)
            and self._turn is turn
        ):
            self._lost_attempt = (turn.pk, turn.attempt)
            log.warning("turn.lease_lost", turn=turn.pk)

    def stop(self) -> None:
        self._task.cancel()


class DeltaPublisher:
    """Publishes streamed text as turn.delta events, coalescing bursts.

    Deltas that arrive within TURN_DELTA_COALESCE_MS of the last event are sent together,
    so a fast model does not turn into one Redis round trip per token; text still pending
    goes out with the next other event, in the same round trip. Knows when the turn's
    stream has ended (the turn was cancelled) so the runtime can stop.
    """

    def __init__(self, turn: Turn):
        self.turn = turn
        self.ended = False
        self.first_delta_at: datetime | None = None
        self._pending: list[str] = []
        self._last_sent = 0.0
        self._window = settings.TURN_DELTA_COALESCE_MS / 1000

    async def add(self, text: str) -> None:
        if self.first_delta_at is None:
            self.first_delta_at = datetime.now(UTC)
        self._pending.append(text)
        if time.monotonic() - self._last_sent >= self._window:
            await self.flush()

    async def flush(self) -> None:
        if self._pending and not self.ended:
            await self._publish([])

    async def reset(self) -> None:
        """Take back the text streamed so far (text still pending goes out first, so that
        clients see in full what is taken back)."""
        self.first_delta_at = None
        await self.publish_event("turn.reset")

    async def publish_event(self, event_type: str, final_turn: dict | None = None, **data):
        """Publish an event of this attempt after the text still pending, in one round trip
        (fenced: a newer attempt's stream refuses them). The event, or None if refused."""
        published = await self._publish([(event_type, data)], final_turn)
        return published[-1] if published else None

    async def _publish(self, events: list[tuple[str, dict]], final_turn=None) -> list[dict] | None:
        if self._pending:
            events = [("turn.delta", {"text": "".join(self._pending)}), *events]
            self._pending = []
            self._last_sent = time.monotonic()
        published = await publish_events(
            turn=self.turn, events=events, attempt=self.turn.attempt, final_turn=final_turn
        )
        if len(published) < len(events):
            self.ended = True
            return None
        return published


def _route(turn: Turn, config: snapshot.Snapshot) -> tuple[Agent, str]:
    """The agent for this turn and why: the first matching active routing rule by
    priority, else the conversation's agent, else the default agent."""
    for rule in config.rules:
        if rule.matches(turn.input):
            return rule.agent, f"rule:{rule.name}"
    agent = config.agent(turn.conversation_agent_id)
    if agent.is_active:
        return agent, "conversation_agent"
    default = config.default_agent()
    if default is None:
        raise LookupError("The conversation's agent is inactive and no default agent is set.")
    return default, "default_agent"


class TurnRun:
    """One attempt at one turn: wires the runtime's callbacks to events, usage records
    and the turn's steps."""

    def __init__(self, turn: Turn, heartbeat: Heartbeat):
        self.turn = turn
        self.heartbeat = heartbeat
        self.deltas = DeltaPublisher(turn)
        self.steps: list[Step] = []
        self.agent: Agent | None = None
        self.chain: tuple = ()  # the agent's models, from the turn's configuration snapshot
        self.deadline = time.monotonic() + settings.TURN_TIMEOUT_SECONDS
        self.timed_out = False

    def callbacks(self) -> RuntimeCallbacks:
        return RuntimeCallbacks(
            on_delta=self.deltas.add,
            on_reset=self.deltas.reset,
            on_tool=self._on_tool,
            on_model_call=self._on_model_call,
            on_step=self.steps.append,
            should_stop=self.should_stop,
        )

    def should_stop(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out or self.deltas.ended or self.heartbeat.lost(self.turn)

    async def _on_tool(self, name: str, status: str, summary: str) -> None:
        await self.deltas.publish_event("turn.tool", name=name, status=status, summary=summary)

    async def _on_model_call(self, call: ModelCall) -> None:
        await off_loop(
            usage_record_create,
            turn_id=self.turn.pk,
            agent_id=self.agent.pk,
            provider_id=call.model.provider_id,
            model_id=call.model.pk,
            attempt=call.attempt,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cached_tokens=call.cached_tokens,
            tokens_estimated=call.tokens_estimated,
            latency_ms=call.latency_ms,
            ttft_ms=call.ttft_ms,
            outcome=call.outcome,
            error_class=call.error_class,
        )

    def save_steps(self) -> None:
        """Inside the transaction that finishes the turn."""
        hot_path_sql.insert_steps(
            [
                TurnStep(
                    turn=self.turn,
                    attempt=self.turn.attempt,
                    index=index,
                    kind=step.kind,
                    name=step.name,
                    arguments=step.arguments,
                    result=step.result,
                    error=step.error[:500],
                    duration_ms=step.duration_ms,
                )
                for index, step in enumerate(self.steps, start=1)
            ]
        )


FAILURES = {
    AllModelsFailed: (
        "provider_unavailable",
        "No model of this agent is available right now. Please try again shortly.",
    ),
    StepLimitExceeded: (
        "tool_step_limit",
        "The agent could not finish its answer within its step limit.",
    ),
}


def _dependency_failure(error: BaseException) -> bool:
    """Redis or the database failed under the turn (also inside a publish callback)."""
    cause = error.__cause__ if isinstance(error, CallbackError) else error
    return isinstance(cause, DEPENDENCY_ERRORS)


async def execute_turn(turn: Turn, heartbeat: Heartbeat) -> None:
    """Run one claimed turn to its end. Precondition: the conversation lock is held."""
    structlog.contextvars.bind_contextvars(turn=turn.pk, attempt=turn.attempt)
    run = TurnRun(turn, heartbeat)
    metrics.TURNS_IN_PROGRESS.inc()
    agent_slug = ""
    try:
        if turn.attempt > 1 and await event_buffer().has_events(turn.pk):
            await run.deltas.reset()  # an earlier attempt may have streamed: start over
        config = await off_loop(snapshot.current)
        agent_slug = config.agent(turn.conversation_agent_id).slug
        agent, intent = _route(turn, config)
        run.agent, run.chain, agent_slug = agent, config.chain(agent), agent.slug
        if turn.intent == Turn.MOOD_ESCALATION:  # decided when the turn was submitted
            outcome, echo, intent = await _escalate_for_mood(run), None, Turn.MOOD_ESCALATION
        else:
            outcome, echo = await _generate(run)
        await _complete(run, intent, outcome, echo)
    except StreamAborted:
        if run.timed_out:
            log.warning("turn.failed", code="turn_timeout")
            await _fail(run, "turn_timeout", "The answer took too long. Try again.", agent_slug)
        else:
            log.info("turn.aborted", reason="cancelled" if run.deltas.ended else "lease_lost")
    except Exception as error:
        if _dependency_failure(error):
            # Recovery runs the turn again when its lease ends, as after a lost worker.
            log.warning("turn.given_up", error=type(error).__name__, exc_info=True)
            return
        code, message = FAILURES.get(type(error), ("internal", ""))
        if code == "internal":
            log.exception("turn.failed")
            message = "The agent failed while answering. Try again."
        else:
            log.warning("turn.failed", code=code, detail=str(error))
        await _fail(run, code, message, agent_slug)
    finally:
        metrics.TURNS_IN_PROGRESS.dec()
        structlog.contextvars.unbind_contextvars("turn", "attempt")


async def _fail(run: TurnRun, code: str, message: str, agent_slug: str) -> None:
    failed = await off_loop(_write_failure, run, code, message)
    if failed is None:
        return
    event_type, data = payloads.turn_ending(failed)
    await run.deltas.publish_event(event_type, final_turn=payloads.turn_payload(failed), **data)
    metrics.TURNS.labels(Turn.Status.FAILED, agent_slug).inc()


def _write_failure(run: TurnRun, code: str, message: str) -> Turn | None:
    """The failed turn as written, or None when this attempt no longer owns it."""
    with transaction.atomic():
        finished = turn_finish(
            turn=run.turn,
            status=Turn.Status.FAILED,
            error_code=code,
            error_message=message,
            agent=run.agent,
        )
        if not finished:
            return None
        run.save_steps()
    # From the row: a completion that failed inside its transaction left its rolled-back
    # values on the turn in memory.
    return Turn.objects.get(pk=run.turn.pk)


async def _escalate_for_mood(run: TurnRun) -> AgentOutcome:
    text = SINK_MESSAGES["escalated"]
    await run.deltas.add(text)
    return AgentOutcome(text=text, sink="escalated")


async def _generate(run: TurnRun):
    """Produce the reply, applying the agent's anti-echo policy. Returns (outcome, echo)."""
    turn, agent = run.turn, run.agent
    recent = await off_loop(
        recent_replies,
        conversation_id=turn.conversation_id,
        before_number=turn.number,
        limit=max(HISTORY_TURNS, agent.echo_window),
    )
    history = [(text, reply) for _, text, reply, _ in reversed(recent[:HISTORY_TURNS])]
    replies = [(number, reply, digest) for number, _, reply, digest in recent[: agent.echo_window]]

    async def attempt(avoid_repeating: bool) -> AgentOutcome:
        outcome = await run_agent(
            agent=agent,
            history=history,
            text=turn.input,
            callbacks=run.callbacks(),
            conversation_id=str(turn.conversation_id),
            avoid_repeating=avoid_repeating,
            chain=run.chain,
        )
        if run.deltas.ended:
            raise StreamAborted()
        return outcome

    outcome = await attempt(avoid_repeating=False)
    if agent.anti_echo == Agent.AntiEcho.OFF or outcome.sink:
        return outcome, None
    match = find_echo(replies=replies, output=outcome.text, threshold=agent.echo_threshold)
    if match is None:
        return outcome, None
    echo = {"action": "flagged", "similar_to": match.similar_to, "score": match.score}
    if agent.anti_echo == Agent.AntiEcho.REGENERATE:
        await run.deltas.reset()
        if run.deltas.ended:  # cancelled meanwhile: no second model call
            raise StreamAborted()
        second = await attempt(avoid_repeating=True)
        again = find_echo(replies=replies, output=second.text, threshold=agent.echo_threshold)
        echo = {
            "action": "regenerated",
            "similar_to": match.similar_to,
            "score": match.score,
            "first_output": outcome.text,
            "regenerated_score": again.score if again else None,
        }
        second.input_tokens += outcome.input_tokens
        second.output_tokens += outcome.output_tokens
        second.model_ms += outcome.model_ms
        outcome = second
    metrics.ECHO.labels(echo["action"]).inc()
    return outcome, echo


async def _complete(run: TurnRun, intent: str, outcome: AgentOutcome, echo) -> None:
    turn, deltas = run.turn, run.deltas
    ttft_ms = (
        int((deltas.first_delta_at - turn.created_at).total_seconds() * 1000)
        if deltas.first_delta_at
        else None
    )
    finished = await off_loop(_write_completion, run, intent, outcome, echo, ttft_ms)
    if not finished:
        # Cancelled, or taken over by a newer attempt, since it was claimed.
        log.warning("turn.completion_not_written")
        return
    event_type, data = payloads.turn_ending(turn)
    await deltas.publish_event(event_type, final_turn=payloads.turn_payload(turn), **data)
    metrics.TURNS.labels(Turn.Status.COMPLETED, run.agent.slug).inc()
    metrics.TURN_LATENCY.observe(turn.latency_ms / 1000)
    if ttft_ms is not None:
        metrics.TURN_TTFT.observe(ttft_ms / 1000)


def _write_completion(run: TurnRun, intent: str, outcome: AgentOutcome, echo, ttft_ms) -> bool:
    turn = run.turn
    with transaction.atomic():
        if outcome.sink:
            # The conversation before the turn: the lock order every writer keeps.
            Conversation.objects.select_for_update().only("pk").get(pk=turn.conversation_id)
        finished = turn_finish(
            turn=turn,
            status=Turn.Status.COMPLETED,
            output=outcome.text,
            output_hash=text_digest(outcome.text),
            agent=run.agent,
            intent=intent,
            echo=echo,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            ttft_ms=ttft_ms,
            model_ms=outcome.model_ms,
        )
        if finished:
            run.save_steps()
            if outcome.sink:
                conversation_apply_sink(
                    conversation_id=turn.conversation_id,
                    sink=outcome.sink,
                    transfer_to=outcome.transfer_to,
                )
    return finished
