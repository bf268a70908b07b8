"""The LLM router (docs/architecture.md, LLM router): one retry loop, a circuit breaker
per model shared through Redis, fallback along the agent's model chain, usage per attempt.

The official SDKs are driven through the adapters against the fake servers of tests/fakes
(real HTTP on 127.0.0.1, SSE streaming). Fine-grained retry and wait checks call
router.complete with a recording `sleep`; end-to-end checks submit a turn and run it with
drain_conversation in the test's thread.
"""

import time
from datetime import UTC, datetime

import pybreaker
import pytest
import time_machine

from agents import router
from agents.breakers import breaker_for, circuit_state
from agents.health import model_health, record_call
from agents.providers.base import StreamAborted
from agents.providers.local import count_tokens
from billing.models import UsageRecord
from conversations.execution import drain_conversation
from conversations.models import Turn
from tests.fakes import DisconnectReply, ErrorReply, StreamErrorReply, TextReply
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm_helpers import (
    RouterSpy,
    breaker_state_in_redis,
    chain_set,
    complete,
    fake_model,
    local_model,
    metric,
    model_make,
    provider_make,
    request_for,
    usage_of,
    usage_records,
    warm_up,
)
from tests.turn_helpers import (
    SUPPORT_PROMPT,
    buffered,
    delta_text,
    local_model_reply,
    submit,
    types_of,
    words,
)

pytest_plugins = ["tests.turn_fixtures"]


QUESTION = "Where is my parcel?"
ANSWER = "Your parcel ships today."
SYSTEM = "You are a shop assistant."
KINDS = ["openai", "anthropic"]


def estimated_input(text: str = QUESTION, system: str = SYSTEM) -> int:
    """What the router estimates for the prompt of a failed attempt (one token a word)."""
    return count_tokens(system) + count_tokens(text)


def run_turn(conversation, text: str = QUESTION) -> Turn:
    turn = submit(conversation, text).turn
    drain_conversation(conversation.pk)
    turn.refresh_from_db()
    return turn


# --- retries: router.complete with a recording sleep -------------------------------------------


@pytest.mark.parametrize("server", KINDS, indirect=True)
def test_a_500_then_success_is_retried_after_a_backoff_and_both_attempts_are_reported(db, server):
    kind = "openai" if isinstance(server, FakeOpenAIServer) else "anthropic"
    model = fake_model(server, kind=kind, max_retries=2)
    server.plan(ErrorReply(500, "upstream exploded"), TextReply(ANSWER, chunks=3))
    spy = RouterSpy()

    response = complete(
        chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )

    assert response.text == ANSWER
    assert response.model == model
    assert response.finish_reason == "stop"
    assert server.calls == 2
    assert len(spy.waits) == 1
    assert 0.5 <= spy.waits[0] <= 1.0  # exponential backoff with jitter: 0.5 s + [0, 0.5]
    assert spy.summary() == [(model.name, 1, "error", "server"), (model.name, 2, "ok", "")]
    failed, ok = spy.calls
    # The failed attempt got no usage from the server: estimated, and nothing came out.
    assert (failed.input_tokens, failed.output_tokens, failed.tokens_estimated) == (
        estimated_input(),
        0,
        True,
    )
    assert failed.ttft_ms is None
    # The successful one: the server's counts.
    assert (ok.input_tokens, ok.output_tokens, ok.cached_tokens, ok.tokens_estimated) == (
        11,
        7,
        0,
        False,
    )
    assert ok.ttft_ms is not None and 0 <= ok.ttft_ms <= ok.latency_ms
    assert "".join(spy.deltas) == ANSWER
    assert spy.resets == 0
    assert metric("orchestra_llm_requests_total", model=model.name, outcome="error") == 1
    assert metric("orchestra_llm_requests_total", model=model.name, outcome="ok") == 1
    assert metric("orchestra_tokens_total", model=model.name, direction="input") == (
        estimated_input() + 11
    )
    assert metric("orchestra_tokens_total", model=model.name, direction="output") == 7
    assert metric("orchestra_llm_latency_seconds_count", model=model.name) == 2


@pytest.mark.parametrize("server", KINDS, indirect=True)
def test_a_429_with_retry_after_waits_exactly_that_long(db, server):
    kind = "openai" if isinstance(server, FakeOpenAIServer) else "anthropic"
    model = fake_model(server, kind=kind, max_retries=1)
    server.plan(ErrorReply(429, "slow down", headers={"Retry-After": "1"}), TextReply(ANSWER))
    spy = RouterSpy()

    response = complete(
        chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )

    assert response.text == ANSWER
    assert spy.waits == [1.0]
    assert server.calls == 2
    assert spy.summary() == [(model.name, 1, "error", "rate_limited"), (model.name, 2, "ok", "")]


def test_a_429_with_retry_after_really_waits_with_the_default_sleep(db, openai_server):
    model = fake_model(openai_server, max_retries=1)
    openai_server.plan(ErrorReply(429, headers={"Retry-After": "1"}), TextReply(ANSWER))
    spy = RouterSpy()
    warm_up(model)  # the SDK imported and its client built already

    started = time.monotonic()
    response = complete(chain=[model], request_for=request_for(), callbacks=spy.callbacks())
    elapsed = time.monotonic() - started

    assert response.text == ANSWER
    assert 1.0 <= elapsed < 2.5  # the wait, plus two small local requests
    assert openai_server.calls == 2


def test_a_retry_after_beyond_the_cap_waits_the_cap(db, openai_server):
    model = fake_model(openai_server, max_retries=1)
    openai_server.plan(ErrorReply(429, headers={"Retry-After": "120"}), TextReply(ANSWER))
    spy = RouterSpy()

    complete(chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep)

    assert spy.waits == [router.MAX_RETRY_AFTER_S] == [30.0]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, "client"), (401, "auth"), (403, "auth"), (404, "not_found")],
)
def test_a_client_error_is_not_retried_and_falls_back_to_the_next_model(
    db, openai_server, status, error_class
):
    provider = provider_make(openai_server, max_retries=3)
    first, second = model_make(provider), model_make(provider)
    openai_server.plan(ErrorReply(status, "no"), TextReply("From the fallback."))
    spy = RouterSpy()

    response = complete(
        chain=[first, second],
        request_for=request_for(),
        callbacks=spy.callbacks(),
        sleep=spy.sleep,
    )

    assert response.text == "From the fallback."
    assert response.model == second
    assert openai_server.calls == 2  # one for each model: the first was not retried
    assert [r.json["model"] for r in openai_server.requests] == [first.name, second.name]
    assert spy.waits == []
    assert spy.summary() == [(first.name, 1, "error", error_class), (second.name, 1, "ok", "")]
    assert metric("orchestra_fallbacks_total", from_model=first.name, to_model=second.name) == 1


def test_retries_stop_after_max_retries_then_the_next_model_answers(db, openai_server):
    provider = provider_make(openai_server, max_retries=2)
    first, second = model_make(provider), model_make(provider)
    openai_server.plan(ErrorReply(500), ErrorReply(502), ErrorReply(503), TextReply(ANSWER))
    spy = RouterSpy()

    response = complete(
        chain=[first, second],
        request_for=request_for(),
        callbacks=spy.callbacks(),
        sleep=spy.sleep,
    )

    assert response.model == second
    assert [r.json["model"] for r in openai_server.requests] == [first.name] * 3 + [second.name]
    assert len(spy.waits) == 2
    assert 0.5 <= spy.waits[0] <= 1.0
    assert 1.0 <= spy.waits[1] <= 1.5  # the backoff doubles
    assert spy.summary() == [
        (first.name, 1, "error", "server"),
        (first.name, 2, "error", "server"),
        (first.name, 3, "error", "server"),
        (second.name, 1, "ok", ""),
    ]


def test_a_timeout_is_retried(db, openai_server):
    model = fake_model(openai_server, max_retries=1, read_timeout_s=0.3)
    openai_server.plan(TextReply("Too late.", delay=1.0), TextReply(ANSWER))
    spy = RouterSpy()

    response = complete(
        chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )

    assert response.text == ANSWER
    assert spy.summary() == [(model.name, 1, "error", "timeout"), (model.name, 2, "ok", "")]


def test_a_refused_connection_is_retried_then_every_model_has_failed(db):
    stopped = FakeOpenAIServer()
    stopped.stop()  # never started: its port is closed
    model = fake_model(stopped, max_retries=1)
    spy = RouterSpy()

    with pytest.raises(router.AllModelsFailed) as failed:
        complete(
            chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
        )

    assert failed.value.failures == [(model.name, "connection")]
    assert len(spy.waits) == 1
    assert spy.summary() == [
        (model.name, 1, "error", "connection"),
        (model.name, 2, "error", "connection"),
    ]


def test_a_mid_stream_disconnect_is_taken_back_and_the_retry_streams_cleanly(db, openai_server):
    model = fake_model(openai_server, max_retries=1)
    openai_server.plan(
        DisconnectReply("Partial answer that breaks", after_chunks=2, chunks=4),
        TextReply(ANSWER, chunks=3),
    )
    spy = RouterSpy()

    response = complete(
        chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )

    assert response.text == ANSWER  # not "Partial answer…" + ANSWER
    assert spy.resets == 1
    assert spy.deltas[:2] == ["Partial", " answer"]
    assert "".join(spy.deltas[2:]) == ANSWER
    assert spy.summary() == [(model.name, 1, "reset", "connection"), (model.name, 2, "ok", "")]


def test_a_context_overflow_from_the_server_falls_back_without_a_retry(db, openai_server):
    provider = provider_make(openai_server, max_retries=3, breaker_fail_max=1)
    first, second = model_make(provider), model_make(provider)
    openai_server.plan(
        ErrorReply(
            400,
            "This model's maximum context length is 8192 tokens.",
            "context_length_exceeded",
        ),
        TextReply(ANSWER),
    )
    spy = RouterSpy()

    response = complete(
        chain=[first, second],
        request_for=request_for(),
        callbacks=spy.callbacks(),
        sleep=spy.sleep,
    )

    assert response.model == second
    assert spy.waits == []
    assert spy.summary() == [
        (first.name, 1, "error", "context_overflow"),
        (second.name, 1, "ok", ""),
    ]
    assert circuit_state(first) == "closed"  # our request was too big: the model is fine


def test_an_error_event_inside_the_stream_is_retried_after_a_reset(db, openai_server):
    model = fake_model(openai_server, max_retries=1)
    openai_server.plan(StreamErrorReply("Half an ans", chunks=2), TextReply(ANSWER))
    spy = RouterSpy()

    response = complete(
        chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )

    assert response.text == ANSWER
    assert spy.resets == 1
    assert spy.summary() == [(model.name, 1, "reset", "server"), (model.name, 2, "ok", "")]


# --- the circuit breaker, directly -------------------------------------------------------------


def test_the_circuit_opens_after_breaker_fail_max_failures_and_stops_the_retries(db, openai_server):
    model = fake_model(openai_server, max_retries=5, breaker_fail_max=2)
    openai_server.plan(*[ErrorReply(500)] * 6)
    spy = RouterSpy()

    with pytest.raises(router.AllModelsFailed) as failed:
        complete(
            chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
        )

    assert openai_server.calls == 2  # no third attempt: the circuit is open
    assert failed.value.failures == [(model.name, "server")]
    assert spy.summary() == [(model.name, 1, "error", "server"), (model.name, 2, "error", "server")]
    assert breaker_state_in_redis(model) == "open"
    assert circuit_state(model) == "open"
    assert metric("orchestra_circuit_breaker_state", model=model.name) == 2


def test_no_wait_is_spent_after_the_failure_that_opened_the_circuit(db, openai_server):
    model = fake_model(openai_server, max_retries=5, breaker_fail_max=2)
    openai_server.plan(ErrorReply(500), ErrorReply(429, headers={"Retry-After": "30"}))
    spy = RouterSpy()

    with pytest.raises(router.AllModelsFailed):
        complete(
            chain=[model], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
        )

    assert len(spy.waits) == 1  # between attempts 1 and 2 only; not the 30 s after the trip


def test_a_client_error_does_not_count_towards_opening_the_circuit(db, openai_server):
    model = fake_model(openai_server, breaker_fail_max=2)
    openai_server.plan(ErrorReply(400), ErrorReply(400), ErrorReply(400))
    for _ in range(3):
        with pytest.raises(router.AllModelsFailed):
            complete(
                chain=[model],
                request_for=request_for(),
                callbacks=RouterSpy().callbacks(),
                sleep=RouterSpy().sleep,
            )

    assert openai_server.calls == 3
    assert circuit_state(model) == "closed"


def test_cancelled_calls_do_not_open_the_circuit_of_a_healthy_model(db, openai_server):
    model = fake_model(openai_server, breaker_fail_max=2)
    openai_server.plan(TextReply(ANSWER, chunks=3), TextReply(ANSWER, chunks=3))
    for _ in range(2):
        spy = RouterSpy()
        callbacks = router.RouterCallbacks(
            on_delta=spy.callbacks().on_delta, should_stop=lambda spy=spy: bool(spy.deltas)
        )
        with pytest.raises(StreamAborted):
            complete(chain=[model], request_for=request_for(), callbacks=callbacks)

    assert circuit_state(model) == "closed"


def test_an_open_circuit_is_skipped_without_a_request_and_counts_as_a_fallback(db, openai_server):
    provider = provider_make(openai_server, breaker_fail_max=1)
    first, second = model_make(provider), model_make(provider)
    openai_server.plan(ErrorReply(500), TextReply("Second."), TextReply("Second again."))
    spy = RouterSpy()
    complete(
        chain=[first, second], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )
    assert circuit_state(first) == "open"

    response = complete(
        chain=[first, second], request_for=request_for(), callbacks=spy.callbacks(), sleep=spy.sleep
    )

    assert response.text == "Second again."
    assert [r.json["model"] for r in openai_server.requests] == [
        first.name,
        second.name,
        second.name,
    ]
    assert metric("orchestra_fallbacks_total", from_model=first.name, to_model=second.name) == 2
    with pytest.raises(pybreaker.CircuitBreakerError), breaker_for(first).calling():
        pass


# --- end to end: turns ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", KINDS, indirect=True)
def test_a_500_then_success_in_a_turn_is_billed_once_per_attempt(
    conversation, support_agent, server, fast_backoff
):
    kind = "openai" if isinstance(server, FakeOpenAIServer) else "anthropic"
    model = fake_model(server, kind=kind, max_retries=1)
    chain_set(support_agent, model)
    server.plan(ErrorReply(500), TextReply(ANSWER))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == ANSWER
    assert server.calls == 2
    failed, ok = usage_records(turn)
    estimated = words(SUPPORT_PROMPT) + words(QUESTION)
    assert (failed.model, failed.provider, failed.agent, failed.attempt) == (
        model,
        model.provider,
        support_agent,
        1,
    )
    assert (failed.outcome, failed.error_class, failed.tokens_estimated) == (
        "error",
        "server",
        True,
    )
    assert (failed.input_tokens, failed.output_tokens) == (estimated, 0)
    assert (ok.model, ok.attempt, ok.outcome, ok.error_class) == (model, 2, "ok", "")
    assert (ok.input_tokens, ok.output_tokens, ok.tokens_estimated) == (11, 7, False)
    assert ok.ttft_ms is not None
    # The turn's total usage is the sum of its attempts.
    assert turn.usage == {"input_tokens": estimated + 11, "output_tokens": 7}
    events = buffered(turn)
    assert "turn.reset" not in types_of(events)  # nothing had been streamed by attempt 1
    assert delta_text(events) == ANSWER


def test_fallback_to_the_second_model_completes_the_turn_and_its_usage_names_both(
    conversation, support_agent, openai_server, anthropic_server
):
    primary = fake_model(openai_server, max_retries=0)
    fallback = fake_model(anthropic_server, kind="anthropic")
    chain_set(support_agent, primary, fallback)
    openai_server.plan(ErrorReply(503, "overloaded"))
    anthropic_server.plan(TextReply(ANSWER, input_tokens=30, output_tokens=5))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == ANSWER
    assert turn.intent == "conversation_agent"
    assert (openai_server.calls, anthropic_server.calls) == (1, 1)
    assert usage_of(turn) == [
        (primary.name, 1, "error", "server"),
        (fallback.name, 1, "ok", ""),
    ]
    assert [r.provider for r in usage_records(turn)] == [primary.provider, fallback.provider]
    assert usage_records(turn)[1].input_tokens == 30
    assert metric("orchestra_fallbacks_total", from_model=primary.name, to_model=fallback.name) == 1
    assert metric("orchestra_llm_requests_total", model=primary.name, outcome="error") == 1
    assert metric("orchestra_llm_requests_total", model=fallback.name, outcome="ok") == 1
    # The anthropic request carried the agent's prompt as the system prompt.
    assert anthropic_server.requests[0].json["system"] == SUPPORT_PROMPT
    assert delta_text(buffered(turn)) == ANSWER


@pytest.mark.parametrize("server", KINDS, indirect=True)
def test_a_mid_stream_disconnect_resets_the_stream_and_the_output_is_the_second_attempt(
    conversation, support_agent, server, fast_backoff
):
    kind = "openai" if isinstance(server, FakeOpenAIServer) else "anthropic"
    model = fake_model(server, kind=kind, max_retries=1)
    chain_set(support_agent, model)
    server.plan(
        DisconnectReply("Your parcel was lost in", after_chunks=2, chunks=4),
        TextReply(ANSWER, chunks=4),
    )

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == ANSWER
    events = buffered(turn)
    types = types_of(events)
    assert types.count("turn.reset") == 1
    reset_at = types.index("turn.reset")
    before, after = events[:reset_at], events[reset_at + 1 :]
    assert types_of(before)[0] == "turn.accepted"
    assert "turn.delta" in types_of(before)
    assert "Your parcel was lost in".startswith(delta_text(before))
    assert delta_text(after) == ANSWER
    assert types_of(after)[-1] == "turn.completed"
    assert events[-1]["output"] == ANSWER
    assert usage_of(turn) == [(model.name, 1, "reset", "connection"), (model.name, 2, "ok", "")]


def test_a_circuit_another_process_opened_is_skipped_and_shown_by_the_gauge(
    conversation, support_agent, openai_server
):
    """Nothing here reads the circuit but the breaker itself, before the call: it notices
    the open state set elsewhere, refuses the call, and the gauge follows."""
    model = fake_model(openai_server, max_retries=0, breaker_fail_max=2, breaker_reset_s=60)
    chain_set(support_agent, model, local_model())
    assert run_turn(conversation).status == Turn.Status.COMPLETED  # the model answers
    assert metric("orchestra_circuit_breaker_state", model=model.name) == 0
    other_process = breaker_for(model)._state_storage
    other_process.opened_at = datetime.now(UTC)
    other_process.state = pybreaker.STATE_OPEN

    turn = run_turn(conversation, "Where is my parcel A-2?")

    assert usage_of(turn) == [("local", 1, "ok", "")]
    assert openai_server.calls == 1
    assert metric("orchestra_circuit_breaker_state", model=model.name) == 2


def test_repeated_failures_open_the_circuit_and_the_next_turns_skip_the_model(
    conversation, support_agent, openai_server, client
):
    model = fake_model(openai_server, max_retries=0, breaker_fail_max=2, breaker_reset_s=60)
    chain_set(support_agent, model, local_model())
    openai_server.plan(ErrorReply(500), ErrorReply(500))
    local_answer = local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))

    # Two failing turns, each answered by the fallback; the second failure opens the circuit.
    for expected_state in ("closed", "open"):
        turn = run_turn(conversation)
        assert turn.status == Turn.Status.COMPLETED
        assert turn.output == local_answer
        assert usage_of(turn) == [(model.name, 1, "error", "server"), ("local", 1, "ok", "")]
        assert breaker_state_in_redis(model) == expected_state
    assert openai_server.calls == 2

    # The next turns skip the model: no request reaches the server.
    for _ in range(2):
        turn = run_turn(conversation)
        assert turn.status == Turn.Status.COMPLETED
        assert turn.output == local_answer
        assert usage_of(turn) == [("local", 1, "ok", "")]
    assert openai_server.calls == 2
    assert metric("orchestra_circuit_breaker_state", model=model.name) == 2
    assert metric("orchestra_fallbacks_total", from_model=model.name, to_model="local") == 4
    assert metric("orchestra_llm_requests_total", model=model.name, outcome="error") == 2

    # /ready/ lists the open circuit (informational: still ready); /status/ says degraded.
    ready = client.get("/ready/").json()
    assert ready["status"] == "ready"
    assert ready["providers"] == {model.name: "open", "local": "closed"}
    assert client.get("/status/").json() == {
        "agents": [
            {
                "agent": "support",
                "status": "degraded",
                "models": [
                    {"model": model.name, "circuit": "open"},
                    {"model": "local", "circuit": "closed"},
                ],
            }
        ]
    }


def test_after_breaker_reset_s_a_half_open_probe_is_let_through_and_closes_the_circuit(
    conversation, support_agent, openai_server, client
):
    model = fake_model(openai_server, max_retries=0, breaker_fail_max=1, breaker_reset_s=1)
    chain_set(support_agent, model, local_model())
    openai_server.plan(ErrorReply(500))
    assert run_turn(conversation).status == Turn.Status.COMPLETED
    assert breaker_state_in_redis(model) == "open"

    time.sleep(1.1)
    assert circuit_state(model) == "half-open"
    assert metric("orchestra_circuit_breaker_state", model=model.name) == 1
    assert client.get("/ready/").json()["providers"][model.name] == "half-open"

    # A failing probe opens the circuit again.
    openai_server.plan(ErrorReply(500))
    turn = run_turn(conversation)
    assert usage_of(turn) == [(model.name, 1, "error", "server"), ("local", 1, "ok", "")]
    assert breaker_state_in_redis(model) == "open"
    assert openai_server.calls == 2

    # A succeeding one closes it.
    time.sleep(1.1)
    openai_server.plan(TextReply(ANSWER))
    turn = run_turn(conversation)
    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == ANSWER
    assert usage_of(turn) == [(model.name, 1, "ok", "")]
    assert openai_server.calls == 3
    assert breaker_state_in_redis(model) == "closed"
    assert client.get("/ready/").json()["providers"][model.name] == "closed"
    assert metric("orchestra_circuit_breaker_state", model=model.name) == 0
    assert client.get("/status/").json()["agents"][0]["status"] == "healthy"


def test_a_circuit_stays_open_for_breaker_reset_s(db, openai_server):
    model = fake_model(openai_server, breaker_fail_max=1, breaker_reset_s=1)
    openai_server.plan(ErrorReply(500))
    while time.time() % 1 < 0.6 or time.time() % 1 > 0.7:  # open it late in a second
        time.sleep(0.01)
    with pytest.raises(router.AllModelsFailed):
        complete(chain=[model], request_for=request_for(), callbacks=RouterSpy().callbacks())
    opened = time.time()
    time.sleep(int(opened) + 1.05 - opened)  # into the next second, well before 1 s

    assert time.time() - opened < 1.0
    assert circuit_state(model) == "open"


def test_all_models_failing_fails_the_turn_without_leaking_provider_internals(
    conversation, support_agent, openai_server, anthropic_server
):
    first = fake_model(openai_server, name="gpt-secret-internal")
    second = fake_model(anthropic_server, kind="anthropic", name="claude-secret-internal")
    chain_set(support_agent, first, second)
    openai_server.plan(ErrorReply(500, "db on fire at 10.0.0.7"))
    anthropic_server.plan(ErrorReply(401, "invalid x-api-key"))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.FAILED
    assert turn.error_code == "provider_unavailable"
    assert turn.error_message == (
        "No model of this agent is available right now. Please try again shortly."
    )
    failed = buffered(turn)[-1]
    assert failed["type"] == "turn.failed"
    assert failed["error"] == {"code": "provider_unavailable", "message": turn.error_message}
    public = str(failed)
    for internal in (
        "127.0.0.1",
        "http",
        "500",
        "401",
        first.name,
        second.name,
        first.provider.name,
        "openai",
        "anthropic",
        "secret",
        "fire",
    ):
        assert internal not in turn.error_message
        assert internal not in public
    assert usage_of(turn) == [(first.name, 1, "error", "server"), (second.name, 1, "error", "auth")]


def test_a_request_beyond_the_context_window_falls_back_without_calling_the_model(
    conversation, support_agent, openai_server
):
    provider = provider_make(openai_server)
    tiny = model_make(provider, context_window=256, max_output_tokens=200)
    roomy = model_make(provider)
    chain_set(support_agent, tiny, roomy)
    openai_server.plan(TextReply(ANSWER))
    long_question = "Where is my parcel? " * 20  # about 100 tokens: more than 256 - 200

    turn = run_turn(conversation, long_question)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == ANSWER
    assert [r.json["model"] for r in openai_server.requests] == [roomy.name]
    assert usage_of(turn) == [(roomy.name, 1, "ok", "")]
    assert metric("orchestra_fallbacks_total", from_model=tiny.name, to_model=roomy.name) == 1
    assert circuit_state(tiny) == "closed"


def test_usage_comes_from_the_provider_and_is_estimated_when_it_sends_none(
    conversation, support_agent, openai_server
):
    model = fake_model(openai_server)
    chain_set(support_agent, model)
    openai_server.plan(
        TextReply(ANSWER, input_tokens=40, output_tokens=6, cached_tokens=32),
        TextReply("No usage from me.", usage=False),
    )

    reported = run_turn(conversation)
    estimated = run_turn(conversation, "And when will it arrive?")

    [record] = usage_records(reported)
    assert (record.input_tokens, record.output_tokens, record.cached_tokens) == (40, 6, 32)
    assert record.tokens_estimated is False
    assert reported.usage == {"input_tokens": 40, "output_tokens": 6}
    # No usage chunk although it was asked for: the adapter estimates (4 characters a token)
    # over the whole prompt it sent: the prompt, the first exchange, the new question.
    assert openai_server.requests[1].json["stream_options"] == {"include_usage": True}
    [record] = usage_records(estimated)
    prompt_chars = sum(len(m["content"]) for m in openai_server.requests[1].json["messages"])
    assert prompt_chars == (
        len(SUPPORT_PROMPT) + len(QUESTION) + len(ANSWER) + len("And when will it arrive?")
    )
    assert record.tokens_estimated is True
    assert (record.input_tokens, record.output_tokens, record.cached_tokens) == (
        -(-prompt_chars // 4),
        -(-len("No usage from me.") // 4),
        0,
    )
    assert estimated.usage == {
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
    }
    assert UsageRecord.objects.filter(model=model).count() == 2


def test_a_models_last_call_is_recorded_once_a_second_and_every_failure_at_once(db):
    """And the first success after a failure at once, so a recovered model never shows its
    failed call as the last one."""
    model = model_make(provider_make(name="health-provider"))
    start = time.time()
    with time_machine.travel(start, tick=False):
        record_call(model, latency_ms=10, error=None)
        record_call(model, latency_ms=20, error=None)  # the same second: not written
        assert (model_health(model)["last_latency_ms"], model_health(model)["last_error"]) == (
            10,
            None,
        )
        record_call(model, latency_ms=30, error="timeout")  # a failure: written at once
        assert (model_health(model)["last_latency_ms"], model_health(model)["last_error"]) == (
            30,
            "timeout",
        )
        record_call(model, latency_ms=35, error=None)  # the success after it: at once too
        assert model_health(model)["last_latency_ms"] == 35
        record_call(model, latency_ms=38, error=None)
        assert model_health(model)["last_latency_ms"] == 35
    with time_machine.travel(start + 1.5, tick=False):
        record_call(model, latency_ms=40, error=None)
        assert (model_health(model)["last_latency_ms"], model_health(model)["last_error"]) == (
            40,
            "timeout",
        )
