"""Turn execution (docs/architecture.md, turn engine): workers run turns to the end, in order, once.

The embedded worker threads and a real Celery worker run the same code; leases and the
attempt number fence out a worker that was presumed dead; recovery re-queues turns of
lost workers and gives up after three attempts.
"""

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from agents.models import Agent
from conversations.execution import drain_conversation
from conversations.models import Turn, text_digest
from conversations.services import (
    conversation_close,
    turn_claim_next,
    turn_extend_lease,
    turn_finish,
    turn_submit,
    turns_recover,
)
from tests.turn_helpers import (
    SUPPORT_PROMPT,
    TRANSACTIONAL,
    agent_make,
    buffered,
    conversation_make,
    delta_text,
    expire_lease,
    footprint,
    local_model_reply,
    seqs,
    submit,
    types_of,
    wait_for_turn,
    wait_until,
    words,
)

pytest_plugins = ["tests.turn_fixtures"]

QUESTION = "Where is my parcel? It should have arrived on Monday."
BASE_DIR = Path(django_settings.BASE_DIR)


def assert_answered_by_the_local_model(turn: Turn, text: str) -> None:
    """The turn completed once, with the support agent's local-model reply to `text`."""
    expected = local_model_reply(("system", SUPPORT_PROMPT), ("user", text))
    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == expected
    assert turn.output_hash == text_digest(expected)
    assert turn.agent.slug == "support"
    assert turn.intent == "conversation_agent"
    assert turn.usage == {
        "input_tokens": words(SUPPORT_PROMPT) + words(text),
        "output_tokens": words(expected),
    }
    assert turn.usage["input_tokens"] > 0
    assert turn.usage["output_tokens"] > 0
    assert (turn.attempt, turn.error, turn.echo, turn.lease_expires_at) == (1, None, None, None)
    assert turn.ttft_ms is not None
    assert turn.latency_ms is not None
    assert 0 <= turn.ttft_ms <= turn.latency_ms
    assert turn.created_at <= turn.started_at <= turn.completed_at

    events = buffered(turn)
    types = types_of(events)
    assert types[0] == "turn.accepted"
    assert types[-1] == "turn.completed"
    assert set(types[1:-1]) == {"turn.delta"}
    assert seqs(events) == list(range(1, len(events) + 1))
    assert delta_text(events) == expected
    assert events[-1] == {
        "type": "turn.completed",
        "conversation": str(turn.conversation_id),
        "turn_id": turn.turn_id,
        "number": turn.number,
        "status": "completed",
        "output": expected,
        "usage": turn.usage,
        "cost_usd": "0.000000",
        "echo": None,
        "seq": len(events),
    }


# --- the two executors -----------------------------------------------------------------------


@TRANSACTIONAL
def test_a_turn_runs_on_the_embedded_worker_threads(threads_executor, conversation):
    # when a turn is submitted (and committed)
    submission = turn_submit(conversation_id=conversation.pk, text=QUESTION, turn_id="msg-1")

    # then a worker thread answers it with the local model, streaming as it goes
    turn = wait_for_turn(submission.turn)
    assert_answered_by_the_local_model(turn, QUESTION)


@TRANSACTIONAL
def test_a_turn_runs_on_a_celery_worker(celery_turn_worker, conversation):
    submission = turn_submit(conversation_id=conversation.pk, text=QUESTION, turn_id="msg-1")

    turn = wait_for_turn(submission.turn)
    assert_answered_by_the_local_model(turn, QUESTION)


# --- what a worker does with a turn (run inline, in the test's transaction) -------------------


def test_a_turn_is_answered_with_the_conversation_so_far(conversation):
    first = submit(conversation, "Do you ship to Norway?", "a").turn
    second = submit(conversation, QUESTION, "b").turn

    assert drain_conversation(conversation.pk) == 2

    first.refresh_from_db()
    second.refresh_from_db()
    assert second.output == local_model_reply(
        ("system", SUPPORT_PROMPT),
        ("user", first.input),
        ("assistant", first.output),
        ("user", QUESTION),
    )
    assert second.input_tokens == (
        words(SUPPORT_PROMPT) + words(first.input) + words(first.output) + words(QUESTION)
    )


def test_a_turn_that_runs_past_turn_timeout_seconds_fails_with_turn_timeout(conversation, settings):
    # given a turn budget already spent when the model starts answering
    settings.TURN_TIMEOUT_SECONDS = -1
    turn = submit(conversation, QUESTION, "a").turn

    drain_conversation(conversation.pk)

    turn.refresh_from_db()
    message = "The answer took too long. Try again."
    assert (turn.status, turn.error, turn.output) == (
        Turn.Status.FAILED,
        {"code": "turn_timeout", "message": message},
        "",
    )
    events = buffered(turn)
    assert types_of(events) == ["turn.accepted", "turn.failed"]
    assert events[-1]["error"] == {"code": "turn_timeout", "message": message}


def test_a_conversation_whose_agent_was_deactivated_is_answered_by_the_default_agent(
    alice, support_agent
):
    sales = agent_make("sales", system_prompt="You sell things.")
    conversation = conversation_make(owner=alice, agent=sales)
    turn = submit(conversation, QUESTION, "a").turn
    sales.is_active = False
    sales.save()  # as the admin does: the configuration snapshot sees the change

    drain_conversation(conversation.pk)

    turn.refresh_from_db()
    assert (turn.status, turn.agent_id, turn.intent) == (
        Turn.Status.COMPLETED,
        support_agent.pk,
        "default_agent",
    )
    assert turn.output == local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))


def test_a_turn_no_agent_can_answer_fails_with_an_internal_error(alice):
    lonely = agent_make("lonely")
    conversation = conversation_make(owner=alice, agent=lonely)
    turn = submit(conversation, QUESTION, "a").turn
    lonely.is_active = False
    lonely.save()

    drain_conversation(conversation.pk)

    turn.refresh_from_db()
    message = "The agent failed while answering. Try again."
    assert (turn.status, turn.error, turn.output) == (
        Turn.Status.FAILED,
        {"code": "internal", "message": message},
        "",
    )
    events = buffered(turn)
    assert types_of(events) == ["turn.accepted", "turn.failed"]
    assert events[-1]["error"] == {"code": "internal", "message": message}


def test_turns_run_in_number_order_and_a_running_turn_blocks_the_next(conversation):
    first = submit(conversation, "one", "a").turn
    submit(conversation, "two", "b")

    claimed = turn_claim_next(conversation_id=conversation.pk)

    assert claimed.pk == first.pk
    # the first one is running on its lease: nothing else may start
    assert turn_claim_next(conversation_id=conversation.pk) is None


# --- fencing and recovery ------------------------------------------------------------------------


def test_a_stale_attempt_can_neither_extend_nor_finish_the_turn(conversation):
    # given a turn claimed by a worker (attempt 1) whose lease then ran out
    turn = submit(conversation, QUESTION, "msg-1").turn
    first = turn_claim_next(conversation_id=conversation.pk)
    assert (first.pk, first.status, first.attempt) == (turn.pk, Turn.Status.PROCESSING, 1)
    expire_lease(turn)
    enqueued = footprint().enqueued

    # when recovery runs, it puts the turn back in the queue and enqueues its conversation
    assert turns_recover() == {"requeued": 1, "failed": 0, "conversations": 1}
    row = Turn.objects.get(pk=turn.pk)
    assert (row.status, row.attempt, row.lease_expires_at) == (Turn.Status.QUEUED, 1, None)
    assert footprint().enqueued == enqueued + 1

    # and another worker claims it as attempt 2
    second = turn_claim_next(conversation_id=conversation.pk)
    assert (second.pk, second.attempt) == (turn.pk, 2)

    # then the first worker, back from the dead, can change nothing
    assert turn_extend_lease(turn=first) is False
    assert turn_finish(turn=first, status=Turn.Status.COMPLETED, output="stale answer") is False
    row = Turn.objects.get(pk=turn.pk)
    assert (row.status, row.attempt, row.output, row.completed_at) == (
        Turn.Status.PROCESSING,
        2,
        "",
        None,
    )
    assert row.lease_expires_at == second.lease_expires_at
    # while the current attempt finishes it
    assert turn_finish(turn=second, status=Turn.Status.COMPLETED, output="fresh answer") is True
    row = Turn.objects.get(pk=turn.pk)
    assert (row.status, row.output) == (Turn.Status.COMPLETED, "fresh answer")


def test_after_three_lost_workers_recovery_fails_the_turn_with_worker_lost(
    conversation, django_capture_on_commit_callbacks
):
    turn = submit(conversation, QUESTION, "msg-1").turn
    for attempt in (1, 2):
        assert turn_claim_next(conversation_id=conversation.pk).attempt == attempt
        expire_lease(turn)
        assert turns_recover() == {"requeued": 1, "failed": 0, "conversations": 1}
    assert turn_claim_next(conversation_id=conversation.pk).attempt == 3
    expire_lease(turn)

    with django_capture_on_commit_callbacks(execute=True):
        assert turns_recover() == {"requeued": 0, "failed": 1, "conversations": 1}

    message = "The worker running this turn was lost 3 times."
    row = Turn.objects.get(pk=turn.pk)
    assert (row.status, row.error, row.attempt, row.lease_expires_at) == (
        Turn.Status.FAILED,
        {"code": "worker_lost", "message": message},
        3,
        None,
    )
    assert row.completed_at is not None
    events = buffered(turn)
    assert types_of(events) == ["turn.accepted", "turn.failed"]
    assert events[-1]["status"] == "failed"
    assert events[-1]["error"] == {"code": "worker_lost", "message": message}
    assert turn_claim_next(conversation_id=conversation.pk) is None


def test_a_worker_that_finds_a_thrice_lost_turn_fails_it_and_moves_on(
    conversation, django_capture_on_commit_callbacks
):
    lost = submit(conversation, "one", "a").turn
    following = submit(conversation, "two", "b").turn
    Turn.objects.filter(pk=lost.pk).update(status=Turn.Status.PROCESSING, attempt=3)
    expire_lease(lost)

    with django_capture_on_commit_callbacks(execute=True):
        claimed = turn_claim_next(conversation_id=conversation.pk)

    assert (claimed.pk, claimed.attempt) == (following.pk, 1)
    lost.refresh_from_db()
    assert (lost.status, lost.error_code) == (Turn.Status.FAILED, "worker_lost")
    assert buffered(lost)[-1]["error"]["code"] == "worker_lost"


def test_recovery_enqueues_queued_turns_nobody_picked_up(conversation, settings):
    turn = submit(conversation, QUESTION, "msg-1").turn
    enqueued = footprint().enqueued
    assert turns_recover() == {"requeued": 0, "failed": 0, "conversations": 0}

    # when the turn has waited longer than TURN_REQUEUE_AFTER_SECONDS
    Turn.objects.filter(pk=turn.pk).update(created_at=turn.created_at - timedelta(seconds=31))
    settings.TURN_REQUEUE_AFTER_SECONDS = 30

    assert turns_recover() == {"requeued": 0, "failed": 0, "conversations": 1}
    assert footprint().enqueued == enqueued + 1
    assert Turn.objects.get(pk=turn.pk).status == Turn.Status.QUEUED


# --- interrupting a running turn, with real worker threads -----------------------------------


@TRANSACTIONAL
def test_interrupt_cancels_the_running_turn_and_runs_the_new_one(
    alice, threads_executor, local_model_delay
):
    # given a turn being streamed slowly by a worker thread
    local_model_delay(20)
    agent = agent_make("impatient", double_text=Agent.DoubleText.INTERRUPT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    running = turn_submit(conversation_id=conversation.pk, text="first", turn_id="a").turn
    wait_until(lambda: "turn.delta" in types_of(buffered(running)), what="the first delta")

    # when the customer sends another message
    newer = turn_submit(conversation_id=conversation.pk, text="second", turn_id="b").turn

    # then the running turn is cancelled at once and its stream ends with the cancellation
    running.refresh_from_db()
    assert (running.status, running.error_code) == (Turn.Status.CANCELLED, "cancelled")
    # and the new turn runs
    newer = wait_for_turn(newer)
    assert (newer.status, newer.attempt) == (Turn.Status.COMPLETED, 1)
    assert newer.output == local_model_reply(("system", SUPPORT_PROMPT), ("user", "second"))
    # and the cancelled turn never completed: no output, its stream ended by turn.failed
    running.refresh_from_db()
    assert (running.status, running.output, running.error_code) == (
        Turn.Status.CANCELLED,
        "",
        "cancelled",
    )
    events = buffered(running)
    assert types_of(events)[0] == "turn.accepted"
    assert types_of(events)[-1] == "turn.failed"
    assert "turn.completed" not in types_of(events)
    assert events[-1]["error"] == {
        "code": "cancelled",
        "message": "Interrupted by a newer message.",
    }
    assert seqs(events) == list(range(1, len(events) + 1))


@TRANSACTIONAL
def test_the_turn_after_an_interrupted_one_runs_on_its_first_attempt(
    alice, threads_executor, settings, local_model_delay
):
    # given short leases (the heartbeat checks every third of a second) and a turn streamed
    # slowly enough (400 ms a word) that a heartbeat falls between its cancellation and
    # the moment its worker notices
    settings.TURN_LEASE_SECONDS = 1
    local_model_delay(400)
    agent = agent_make("impatient", double_text=Agent.DoubleText.INTERRUPT, is_default=True)
    conversation = conversation_make(owner=alice, agent=agent)
    running = turn_submit(conversation_id=conversation.pk, text="first", turn_id="a").turn
    wait_until(lambda: "turn.delta" in types_of(buffered(running)), what="the first delta")

    # when a newer message interrupts it
    newer = turn_submit(conversation_id=conversation.pk, text="second", turn_id="b").turn

    # then the newer turn streams its answer on its first attempt
    try:
        wait_until(
            lambda: types_of(buffered(newer)).count("turn.delta") >= 2,
            timeout=5,
            what="the newer turn to stream",
        )
        newer.refresh_from_db()
        assert (newer.status, newer.attempt) == (Turn.Status.PROCESSING, 1)
    finally:
        conversation_close(conversation=conversation)  # stops the slow turn


@TRANSACTIONAL
def test_turns_that_outlast_their_lease_keep_it_while_they_run(
    alice, threads_executor, settings, local_model_delay
):
    # given leases of a second and a half (a beat every half second), and two
    # conversations whose answers take about three seconds
    settings.TURN_LEASE_SECONDS = 1.5
    local_model_delay(50)
    agent = agent_make("patient", is_default=True)
    turns = [
        turn_submit(
            conversation_id=conversation_make(owner=alice, agent=agent).pk,
            text=QUESTION,
            turn_id="a",
        ).turn
        for _ in range(2)
    ]

    # when recovery keeps looking for turns whose worker is gone while they run
    def recovered_until_done():
        turns_recover()
        ended = Turn.objects.filter(pk__in=[turn.pk for turn in turns], status__in=Turn.TERMINAL)
        return ended.count() == len(turns)

    wait_until(recovered_until_done, timeout=15, interval=0.2, what="both turns to end")

    # then the one heartbeat thread renewed both leases: each turn ran once, unmoved
    for turn in turns:
        turn = wait_for_turn(turn)
        assert (turn.status, turn.attempt) == (Turn.Status.COMPLETED, 1)
        assert types_of(buffered(turn)).count("turn.reset") == 0


# --- a worker killed mid-turn ------------------------------------------------------------------


def _worker_env(**extra: str) -> dict:
    database = django_settings.DATABASES["default"]
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        ),
        "REDIS_URL": django_settings.REDIS_URL,
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "TURN_LEASE_SECONDS": "3",
        **extra,
    }


def _start_celery_worker(name: str, log_dir: Path, **env: str) -> subprocess.Popen:
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "orchestra_site",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "2",
            "-l",
            "INFO",
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=BASE_DIR,
        env=_worker_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


@pytest.mark.slow
@TRANSACTIONAL
def test_a_turn_survives_the_sigkill_of_its_worker(conversation, settings, tmp_path):
    settings.TURN_EXECUTOR = "celery"
    workers: list[subprocess.Popen] = []
    try:
        # given a Celery worker streaming a turn slowly (100 ms a word, 3 s leases)
        doomed = _start_celery_worker("doomed", tmp_path, LOCAL_MODEL_TOKEN_DELAY_MS="100")
        workers.append(doomed)
        turn = turn_submit(conversation_id=conversation.pk, text=QUESTION, turn_id="msg-1").turn
        wait_until(
            lambda: types_of(buffered(turn)).count("turn.delta") >= 3,
            timeout=30,
            what="the first worker to stream some text",
        )

        # when the worker is killed mid-stream
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        first_attempt = buffered(turn)
        row = Turn.objects.get(pk=turn.pk)
        assert (row.status, row.attempt) == (Turn.Status.PROCESSING, 1)

        # and another worker is up, and recovery runs once the lease has expired
        workers.append(_start_celery_worker("rescuer", tmp_path, LOCAL_MODEL_TOKEN_DELAY_MS="0"))
        wait_until(
            lambda: Turn.objects.filter(pk=turn.pk, lease_expires_at__lt=timezone.now()).exists(),
            timeout=10,
            what="the lease to expire",
        )
        assert turns_recover() == {"requeued": 1, "failed": 0, "conversations": 1}

        # then the turn is completed by the second worker, as attempt 2
        turn = wait_for_turn(turn, timeout=30)
    finally:
        for worker in workers:
            _stop(worker)

    expected = local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))
    assert (turn.status, turn.attempt, turn.output) == (Turn.Status.COMPLETED, 2, expected)
    assert Turn.objects.filter(conversation=conversation).count() == 1
    # and its stream holds the first attempt's partial text, a reset, then the whole answer
    events = buffered(turn)
    types = types_of(events)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert types.count("turn.reset") == 1
    assert types.count("turn.completed") == 1
    assert types[-1] == "turn.completed"
    reset_at = types.index("turn.reset")
    assert events[:reset_at] == first_attempt
    partial = delta_text(first_attempt)
    assert partial != expected
    assert expected.startswith(partial)
    assert delta_text(events[reset_at:]) == expected
    assert events[-1]["output"] == expected
