"""The agent runtime (issue 4 "Runtime"): routing, the tool-calling loop against real
provider protocols (fake servers, official SDKs), tool errors returned to the model,
sink tools, transfer_to_agent and the step limit. Turns are submitted and run with
drain_conversation in the test's thread.
"""

import json

import pytest
from django.test import TestCase

from agents.models import Agent, LLMModel, RoutingRule
from agents.router import ContextOverflow
from agents.runtime import SINK_MESSAGES, fit_messages
from agents.tools import Tool, get_tool, register
from conversations.execution import drain_conversation
from conversations.models import Conversation, Turn, TurnStep
from conversations.services import turn_submit
from infrastructure.errors import ConversationClosed
from tests.fakes import DisconnectReply, TextReply, ToolCallReply
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm_helpers import (
    chain_set,
    fake_model,
    model_make,
    provider_make,
    tool_calls_sent_back,
    tool_results,
    usage_of,
)
from tests.turn_helpers import (
    SUPPORT_PROMPT,
    agent_make,
    buffered,
    conversation_make,
    delta_text,
    local_model_reply,
    submit,
    types_of,
)

pytest_plugins = ["tests.turn_fixtures"]


# --- test-only tools, registered once for the whole process (the registry is global) -----------

LOOKUP = "llmqa_lookup_order"
EXPLODE = "llmqa_explode"
LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "description": "The order number, e.g. A-42."},
        "express": {"type": "boolean"},
    },
    "required": ["order_id"],
    "additionalProperties": False,
}
LOOKUP_DESCRIPTION = "Look up an order's shipping status."
lookups: list[dict] = []


def _lookup(context, order_id: str, express: bool = False) -> dict:
    lookups.append(
        {
            "agent": context.agent_slug,
            "conversation": context.conversation_id,
            "order_id": order_id,
            "express": express,
        }
    )
    return {"order_id": order_id, "status": "shipped", "express": express}


def _explode(context) -> dict:
    raise RuntimeError("database password is hunter2")


if get_tool(LOOKUP) is None:
    register(Tool(LOOKUP, LOOKUP_DESCRIPTION, LOOKUP_SCHEMA, _lookup))
if get_tool(EXPLODE) is None:
    register(
        Tool(
            EXPLODE,
            "A tool that always crashes.",
            {"type": "object", "properties": {}, "additionalProperties": False},
            _explode,
        )
    )

QUESTION = "Where is order A-42?"
FINAL = "Order A-42 has shipped."


@pytest.fixture(autouse=True)
def _no_lookups():
    lookups.clear()
    yield
    lookups.clear()


def kind_of(server) -> str:
    return "openai" if isinstance(server, FakeOpenAIServer) else "anthropic"


def call_id(server, n: int = 1) -> str:
    """The id the fake gives its n-th tool call of a reply."""
    return f"call_{n}" if isinstance(server, FakeOpenAIServer) else f"toolu_{n}"


def agent_tools(agent: Agent, *tools: str, **fields) -> Agent:
    agent.tools = list(tools)
    for name, value in fields.items():
        setattr(agent, name, value)
    agent.save()
    return agent


def run_turn(conversation, text: str = QUESTION) -> Turn:
    turn = submit(conversation, text).turn
    drain_conversation(conversation.pk)
    turn.refresh_from_db()
    return turn


def steps_of(turn: Turn) -> list[tuple]:
    return [
        (s.kind, s.name, s.arguments, s.result, s.error)
        for s in TurnStep.objects.filter(turn=turn).order_by("attempt", "index")
    ]


def tool_events(turn: Turn) -> list[tuple[str, str, str]]:
    return [
        (e["name"], e["status"], e["summary"]) for e in buffered(turn) if e["type"] == "turn.tool"
    ]


# --- the tool loop ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["openai", "anthropic"], indirect=True)
def test_a_tool_call_round_trip_with_arguments(conversation, support_agent, server):
    model = fake_model(server, kind=kind_of(server))
    chain_set(support_agent, model)
    agent_tools(support_agent, LOOKUP)
    arguments = {"order_id": "A-42", "express": True}
    result = {"order_id": "A-42", "status": "shipped", "express": True}
    server.plan(ToolCallReply(LOOKUP, arguments, chunks=4), TextReply(FINAL))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == FINAL
    assert lookups == [
        {
            "agent": "support",
            "conversation": str(conversation.pk),
            "order_id": "A-42",
            "express": True,
        }
    ]
    assert server.calls == 2
    # The tool was offered in its provider's shape.
    offered = server.requests[0].json["tools"]
    if kind_of(server) == "openai":
        assert offered == [
            {
                "type": "function",
                "function": {
                    "name": LOOKUP,
                    "description": LOOKUP_DESCRIPTION,
                    "parameters": LOOKUP_SCHEMA,
                },
            }
        ]
    else:
        assert offered == [
            {"name": LOOKUP, "description": LOOKUP_DESCRIPTION, "input_schema": LOOKUP_SCHEMA}
        ]
    # The second request carries the call and its result back to the model.
    assert tool_calls_sent_back(server, 1) == [
        {"id": call_id(server), "name": LOOKUP, "arguments": arguments}
    ]
    assert tool_results(server, 1) == [{"id": call_id(server), "content": json.dumps(result)}]
    # Every step is recorded, the tool call with its arguments and result.
    assert steps_of(turn) == [
        (
            "model_call",
            model.name,
            None,
            {"text": "", "tool_calls": [LOOKUP], "finish_reason": "tool_calls"},
            "",
        ),
        ("tool_call", LOOKUP, arguments, result, ""),
        (
            "model_call",
            model.name,
            None,
            {"text": FINAL, "tool_calls": [], "finish_reason": "stop"},
            "",
        ),
    ]
    assert tool_events(turn) == [(LOOKUP, "started", ""), (LOOKUP, "ok", json.dumps(result))]
    types = types_of(buffered(turn))
    assert types[:3] == ["turn.accepted", "turn.tool", "turn.tool"]
    assert types[-1] == "turn.completed"
    assert delta_text(buffered(turn)) == FINAL
    assert usage_of(turn) == [(model.name, 1, "ok", ""), (model.name, 1, "ok", "")]
    assert turn.usage == {"input_tokens": 20 + 11, "output_tokens": 9 + 7}


def test_the_local_model_calls_an_offered_tool_for_a_request_it_recognizes(
    conversation, support_agent
):
    agent_tools(support_agent, "handoff_to_human")

    turn = run_turn(conversation, "Can I talk to a real person please?")

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == SINK_MESSAGES["handed_off"]
    assert steps_of(turn)[1] == (
        "tool_call",
        "handoff_to_human",
        {"reason": "The customer asked for a person."},
        {"status": "handed_off", "reason": "The customer asked for a person."},
        "",
    )
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.HANDED_OFF


@pytest.mark.parametrize(
    ("tool", "status"),
    [
        ("resolve_conversation", Conversation.Status.RESOLVED),
        ("handoff_to_human", Conversation.Status.HANDED_OFF),
        ("escalate", Conversation.Status.ESCALATED),
    ],
)
def test_each_sink_tool_moves_the_conversation_and_ends_the_turn(
    conversation, support_agent, openai_server, tool, status
):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, tool, LOOKUP)
    openai_server.plan(ToolCallReply(tool, {"reason": "The customer said so."}))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == SINK_MESSAGES[status]
    assert delta_text(buffered(turn)) == SINK_MESSAGES[status]
    assert openai_server.calls == 1  # the sink ends the turn: no second model call
    assert steps_of(turn)[1:] == [
        (
            "tool_call",
            tool,
            {"reason": "The customer said so."},
            {"status": status, "reason": "The customer said so."},
            "",
        )
    ]
    conversation.refresh_from_db()
    assert conversation.status == status
    assert conversation.agent == support_agent
    with pytest.raises(ConversationClosed):
        turn_submit(conversation_id=conversation.pk, text="Hello again?")


def test_a_sink_after_some_text_keeps_the_models_words(conversation, support_agent, openai_server):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, "resolve_conversation")
    openai_server.plan(
        ToolCallReply("resolve_conversation", {}, text="Happy to help, goodbye!"),
    )

    turn = run_turn(conversation)

    assert turn.output == "Happy to help, goodbye!"
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.RESOLVED


def test_transfer_to_agent_hands_the_conversation_over_and_the_next_turn_is_theirs(
    conversation, support_agent, openai_server
):
    provider = provider_make(openai_server)
    support_model, billing_model = model_make(provider), model_make(provider)
    chain_set(support_agent, support_model)
    agent_tools(support_agent, "transfer_to_agent")
    billing = agent_make("billing", name="Billing", system_prompt="You answer billing questions.")
    chain_set(billing, billing_model)
    openai_server.plan(
        ToolCallReply("transfer_to_agent", {"agent": "billing", "reason": "An invoice."}),
        TextReply("Billing here: your invoice is on its way."),
    )

    first = run_turn(conversation, "I need a copy of my invoice.")

    assert first.status == Turn.Status.COMPLETED
    assert first.output == SINK_MESSAGES["transfer"]
    assert first.agent == support_agent
    assert steps_of(first)[1] == (
        "tool_call",
        "transfer_to_agent",
        {"agent": "billing", "reason": "An invoice."},
        {"transferred_to": "billing", "reason": "An invoice."},
        "",
    )
    conversation.refresh_from_db()
    assert conversation.agent == billing
    assert conversation.status == Conversation.Status.ACTIVE

    second = run_turn(conversation, "Is it on its way?")

    assert second.status == Turn.Status.COMPLETED
    assert second.agent == billing
    assert second.intent == "conversation_agent"
    assert second.output == "Billing here: your invoice is on its way."
    request = openai_server.requests[1].json
    assert request["model"] == billing_model.name
    assert request["messages"] == [
        {"role": "system", "content": "You answer billing questions."},
        {"role": "user", "content": "I need a copy of my invoice."},
        {"role": "assistant", "content": SINK_MESSAGES["transfer"]},
        {"role": "user", "content": "Is it on its way?"},
    ]
    assert "tools" not in request  # billing has no tools


def test_a_transfer_to_an_unknown_agent_goes_back_to_the_model_as_an_error(
    conversation, support_agent, openai_server
):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, "transfer_to_agent")
    openai_server.plan(
        ToolCallReply("transfer_to_agent", {"agent": "nobody"}),
        TextReply("I could not transfer you."),
    )

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == "I could not transfer you."
    assert tool_results(openai_server, 1) == [
        {"id": "call_1", "content": json.dumps({"error": "No active agent 'nobody'."})}
    ]
    conversation.refresh_from_db()
    assert conversation.agent == support_agent


def test_a_sink_cancels_the_turns_queued_after_it(conversation, support_agent, openai_server):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, "handoff_to_human")
    openai_server.plan(ToolCallReply("handoff_to_human", {"reason": "Asked for a person."}))
    first = submit(conversation, "Get me a person.").turn
    second = submit(conversation, "Hello??").turn

    with TestCase.captureOnCommitCallbacks(execute=True):  # as a real commit would
        assert drain_conversation(conversation.pk) == 1

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Turn.Status.COMPLETED
    assert (second.status, second.error_code) == (Turn.Status.CANCELLED, "cancelled")
    assert openai_server.calls == 1
    assert buffered(second)[-1]["type"] == "turn.failed"


@pytest.mark.parametrize("server", ["openai", "anthropic"], indirect=True)
def test_two_tool_calls_in_one_reply_are_both_run_and_both_answered(
    conversation, support_agent, server
):
    chain_set(support_agent, fake_model(server, kind=kind_of(server)))
    agent_tools(support_agent, LOOKUP)
    second_id = "call_b" if kind_of(server) == "openai" else "toolu_b"
    server.plan(
        ToolCallReply(
            LOOKUP, {"order_id": "A-1"}, more=((LOOKUP, {"order_id": "A-2"}, second_id),)
        ),
        TextReply("Both have shipped."),
    )

    turn = run_turn(conversation)

    assert turn.output == "Both have shipped."
    assert [order["order_id"] for order in lookups] == ["A-1", "A-2"]
    assert [r["id"] for r in tool_results(server, 1)] == [call_id(server), second_id]
    assert [json.loads(r["content"])["order_id"] for r in tool_results(server, 1)] == ["A-1", "A-2"]
    if kind_of(server) == "anthropic":
        # Anthropic wants every result of one turn in the same user message.
        last = server.requests[1].json["messages"][-1]
        assert last["role"] == "user"
        assert [block["type"] for block in last["content"]] == ["tool_result", "tool_result"]


def test_a_model_without_tool_support_is_offered_no_tools(
    conversation, support_agent, openai_server
):
    model = model_make(provider_make(openai_server), supports_tools=False)
    chain_set(support_agent, model)
    agent_tools(support_agent, LOOKUP, "escalate")
    openai_server.plan(TextReply(FINAL))

    assert run_turn(conversation).output == FINAL
    assert "tools" not in openai_server.requests[0].json


def test_inactive_models_are_left_out_of_the_chain(conversation, support_agent, openai_server):
    retired = model_make(provider_make(openai_server), is_active=False)
    chain_set(support_agent, retired)

    turn = run_turn(conversation)

    assert turn.output == local_model_reply(("system", SUPPORT_PROMPT), ("user", QUESTION))
    assert usage_of(turn) == [("local", 1, "ok", "")]
    assert openai_server.calls == 0


# --- routing -----------------------------------------------------------------------------------


def test_the_matching_rule_with_the_lowest_priority_number_wins(conversation, support_agent):
    later = agent_make("refunds-later", system_prompt="You are the later refunds desk.")
    first = agent_make("refunds-first", system_prompt="You are the first refunds desk.")
    ignored = agent_make("refunds-ignored", system_prompt="You are never asked.")
    RoutingRule.objects.create(name="refund-later", priority=20, pattern="refund", agent=later)
    RoutingRule.objects.create(
        name="refund-first", priority=10, kind="regex", pattern=r"\brefund(s|ed)?\b", agent=first
    )
    RoutingRule.objects.create(
        name="refund-off", priority=1, pattern="refund", agent=ignored, is_active=False
    )
    text = "I want a REFUND for order 7."

    routed = run_turn(conversation, text)
    unrouted = run_turn(conversation, "Where is my parcel?")

    assert routed.status == Turn.Status.COMPLETED
    assert (routed.agent, routed.intent) == (first, "rule:refund-first")
    assert routed.output == local_model_reply(
        ("system", "You are the first refunds desk."), ("user", text)
    )
    assert (unrouted.agent, unrouted.intent) == (support_agent, "conversation_agent")
    conversation.refresh_from_db()
    assert conversation.agent == support_agent  # a rule routes a turn; it does not transfer


def test_keyword_rules_match_whole_words_only(conversation, support_agent):
    refunds = agent_make("refunds")
    RoutingRule.objects.create(name="refund", priority=10, pattern="refund", agent=refunds)

    turn = run_turn(conversation, "Is the item refundable?")

    assert (turn.agent, turn.intent) == (support_agent, "conversation_agent")


def test_an_inactive_conversation_agent_gives_way_to_the_default_agent(alice, support_agent):
    other = agent_make("other")
    conversation = conversation_make(owner=alice, agent=other)
    Agent.objects.filter(pk=other.pk).update(is_active=False)

    turn = run_turn(conversation)

    assert (turn.agent, turn.intent) == (support_agent, "default_agent")


# --- tool errors go back to the model -------------------------------------------------------


@pytest.mark.parametrize("name", ["no_such_tool", "escalate"])
def test_an_unknown_or_unoffered_tool_is_an_error_for_the_model_and_the_turn_goes_on(
    conversation, support_agent, openai_server, name
):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, LOOKUP)
    openai_server.plan(ToolCallReply(name, {"reason": "x"}), TextReply("Sorry, I can't do that."))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == "Sorry, I can't do that."
    error = f"Unknown tool {name!r}: use one of {LOOKUP}."
    assert tool_results(openai_server, 1) == [
        {"id": "call_1", "content": json.dumps({"error": error})}
    ]
    assert steps_of(turn)[1] == ("tool_call", name, {"reason": "x"}, None, error)
    assert tool_events(turn) == [(name, "started", ""), (name, "error", error)]
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ACTIVE  # "escalate" was not offered


@pytest.mark.parametrize("raw", ['{"order_id": "A-4', "[1, 2]"])
def test_malformed_tool_arguments_are_an_error_for_the_model_logged_and_the_turn_goes_on(
    conversation, support_agent, openai_server, log_output, raw
):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, LOOKUP)
    openai_server.plan(ToolCallReply(LOOKUP, raw, chunks=2), TextReply(FINAL))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == FINAL
    assert lookups == []
    error = f"The arguments are not a JSON object: {raw}"
    assert tool_results(openai_server, 1) == [
        {"id": "call_1", "content": json.dumps({"error": error})}
    ]
    assert steps_of(turn)[1] == ("tool_call", LOOKUP, {"raw": raw}, None, error)
    [logged] = log_output.events("runtime.tool_error")
    assert (logged["tool"], logged["error"], logged["level"]) == (LOOKUP, error, "warning")


def test_arguments_that_break_the_tools_schema_are_an_error_for_the_model(
    conversation, support_agent, openai_server
):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, LOOKUP)
    openai_server.plan(ToolCallReply(LOOKUP, {"express": "yes"}), TextReply(FINAL))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert lookups == []
    [result] = tool_results(openai_server, 1)
    assert json.loads(result["content"]) == {
        "error": "Invalid arguments (arguments): 'order_id' is a required property"
    }


def test_a_tool_that_raises_is_an_error_for_the_model_and_the_turn_completes(
    conversation, support_agent, openai_server, log_output
):
    chain_set(support_agent, fake_model(openai_server))
    agent_tools(support_agent, EXPLODE)
    openai_server.plan(ToolCallReply(EXPLODE, {}), TextReply("That did not work, sorry."))

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    assert turn.output == "That did not work, sorry."
    error = "The tool failed (RuntimeError)."
    assert tool_results(openai_server, 1) == [
        {"id": "call_1", "content": json.dumps({"error": error})}
    ]
    assert "hunter2" not in json.dumps(openai_server.requests[1].json)
    assert steps_of(turn)[1] == ("tool_call", EXPLODE, {}, None, error)
    assert [line["tool"] for line in log_output.events("runtime.tool_crashed")] == [EXPLODE]


def test_the_step_limit_fails_the_turn_with_tool_step_limit(
    conversation, support_agent, openai_server
):
    model = fake_model(openai_server)
    chain_set(support_agent, model)
    agent_tools(support_agent, LOOKUP, max_tool_steps=2)
    openai_server.plan(
        ToolCallReply(LOOKUP, {"order_id": "A-1"}),
        ToolCallReply(LOOKUP, {"order_id": "A-2"}),
        TextReply("never asked for"),
    )

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.FAILED
    assert turn.error_code == "tool_step_limit"
    assert turn.error_message == "The agent could not finish its answer within its step limit."
    assert openai_server.calls == 2
    assert [order["order_id"] for order in lookups] == ["A-1", "A-2"]
    assert [(kind, name) for kind, name, *_ in steps_of(turn)] == [
        ("model_call", model.name),
        ("tool_call", LOOKUP),
        ("model_call", model.name),
        ("tool_call", LOOKUP),
    ]
    failed = buffered(turn)[-1]
    assert failed["type"] == "turn.failed"
    assert failed["error"] == {"code": "tool_step_limit", "message": turn.error_message}


def test_after_a_reset_in_a_later_step_the_stream_still_adds_up_to_the_output(
    conversation, support_agent, openai_server, fast_backoff
):
    model = fake_model(openai_server, max_retries=1)
    chain_set(support_agent, model)
    agent_tools(support_agent, LOOKUP)
    openai_server.plan(
        ToolCallReply(LOOKUP, {"order_id": "A-42"}, text="Let me check. "),
        DisconnectReply("Your order", after_chunks=1, chunks=3),
        TextReply(FINAL),
    )

    turn = run_turn(conversation)

    assert turn.status == Turn.Status.COMPLETED
    events = buffered(turn)
    types = types_of(events)
    assert types.count("turn.reset") == 1
    after_reset = events[types.index("turn.reset") + 1 :]
    assert delta_text(after_reset) == turn.output


# --- history and the context window ------------------------------------------------------------


def test_history_is_bounded_to_the_context_window_oldest_pairs_dropped_first():
    def message(role: str, label: str) -> dict:
        return {"role": role, "content": label.ljust(39, ".")}  # 39 characters: 10 tokens

    agent = Agent(max_output_tokens=100)
    system = [message("system", "prompt")]
    tail = [message("user", "new question")]
    history = [message(role, f"{role} {n}") for n in (1, 2, 3) for role in ("user", "assistant")]

    # Room for the prompt, the question (20 tokens) and two of the three pairs (40).
    model = LLMModel(name="m", context_window=100 + 20 + 40 + 5, max_output_tokens=500)
    kept = fit_messages(model=model, agent=agent, system=system, history=history, tail=tail)
    assert kept == system + history[2:] + tail

    model.context_window = 100 + 20 + 19
    assert fit_messages(model=model, agent=agent, system=system, history=history, tail=tail) == (
        system + tail
    )

    model.context_window = 100 + 19
    with pytest.raises(ContextOverflow):
        fit_messages(model=model, agent=agent, system=system, history=history, tail=tail)


def test_a_long_conversation_sends_only_the_recent_history_that_fits(
    conversation, support_agent, openai_server
):
    provider = provider_make(openai_server)
    model = model_make(provider, context_window=300, max_output_tokens=200)
    chain_set(support_agent, model)
    agent_tools(support_agent, max_output_tokens=200)
    answer = "A" * 99  # 25 tokens
    openai_server.plan(*[TextReply(answer)] * 4)

    for n in range(1, 5):
        assert run_turn(conversation, f"Question {n}".ljust(39, "?")).status == "completed"

    # Budget 100 tokens: the prompt (19) and the new question (10) leave room for two pairs
    # of 35 tokens: the oldest turn was dropped.
    sent = openai_server.requests[3].json["messages"]
    assert [m["content"][:10] for m in sent] == [
        SUPPORT_PROMPT[:10],
        "Question 2",
        "A" * 10,
        "Question 3",
        "A" * 10,
        "Question 4",
    ]
