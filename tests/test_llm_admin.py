"""LLM configuration in the admin (issue 4 "Configuration in the admin", "Bad input"):
providers with write-only encrypted keys, model chains, routing rules, validation messages
on the field, the "Test connection" action, and provider health (open circuits)."""

import re
from html import unescape

import pytest

from agents import router, secrets, snapshot
from agents.models import Agent, AgentModel, LLMModel, Provider, RoutingRule
from billing.models import UsageRecord
from conversations.execution import drain_conversation
from conversations.models import Turn
from tests.fakes import ErrorReply, TextReply
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm_helpers import (
    RouterSpy,
    chain_set,
    complete,
    fake_model,
    local_model,
    model_make,
    provider_make,
    request_for,
    unique,
    usage_of,
)
from tests.turn_helpers import SUPPORT_PROMPT, conversation_make, local_model_reply, submit

pytest_plugins = ["tests.turn_fixtures"]

KEY = "sk-live-SECRET-abcdef0123456789wxyz"
PROVIDERS = "/admin/agents/provider/"
MODELS = "/admin/agents/llmmodel/"
RULES = "/admin/agents/routingrule/"


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def inline_management(prefix: str, total: int, initial: int = 0) -> dict:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def provider_form(name: str, base_url: str, *, models: tuple[str, ...] = (), **fields) -> dict:
    """The provider add form, with its models inline."""
    data = {
        "name": name,
        "kind": "openai",
        "base_url": base_url,
        "api_key": "",
        "api_key_env": "",
        "connect_timeout_s": "5.0",
        "read_timeout_s": "60.0",
        "max_retries": "3",
        "breaker_fail_max": "3",
        "breaker_reset_s": "30",
        "is_active": "on",
        **inline_management("models", len(models)),
    }
    for index, model in enumerate(models):
        data |= {
            f"models-{index}-name": model,
            f"models-{index}-context_window": "8192",
            f"models-{index}-max_output_tokens": "1024",
            f"models-{index}-supports_tools": "on",
            f"models-{index}-is_active": "on",
        }
    data.update(fields)
    return data


def agent_form(agent: Agent, *, new_links: tuple[LLMModel, ...] = (), **overrides) -> dict:
    """The agent change form as the browser would send it back: its current values, its
    current chain rows, then `new_links` appended, then `overrides`."""
    data = {
        "name": agent.name,
        "slug": agent.slug,
        "description": agent.description,
        "system_prompt": agent.system_prompt,
        "temperature": str(agent.temperature),
        "max_output_tokens": str(agent.max_output_tokens),
        "tools": list(agent.tools),
        "max_tool_steps": str(agent.max_tool_steps),
        "double_text": agent.double_text,
        "anti_echo": agent.anti_echo,
        "echo_threshold": str(agent.echo_threshold),
        "echo_window": str(agent.echo_window),
        "escalate_mood_below": ""
        if agent.escalate_mood_below is None
        else agent.escalate_mood_below,
        "escalate_after_turns": str(agent.escalate_after_turns),
    }
    if agent.is_active:
        data["is_active"] = "on"
    if agent.is_default:
        data["is_default"] = "on"
    links = list(AgentModel.objects.filter(agent=agent).order_by("position"))
    data |= inline_management("chain_links", len(links) + len(new_links), len(links))
    for index, link in enumerate(links):
        data |= {
            f"chain_links-{index}-id": str(link.pk),
            f"chain_links-{index}-agent": str(agent.pk),
            f"chain_links-{index}-position": str(link.position),
            f"chain_links-{index}-model": str(link.model_id),
        }
    for offset, model in enumerate(new_links):
        index = len(links) + offset
        data |= {
            f"chain_links-{index}-agent": str(agent.pk),
            f"chain_links-{index}-position": str(index),
            f"chain_links-{index}-model": str(model.pk),
        }
    data.update(overrides)
    return data


def agent_url(agent: Agent) -> str:
    return f"/admin/agents/agent/{agent.pk}/change/"


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


def inline_errors(response) -> list[dict]:
    [formset] = response.context["inline_admin_formsets"]
    return formset.formset.errors


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def text_of(response) -> str:
    return unescape(response.content.decode())


# --- providers and their keys ---------------------------------------------------------------


def test_a_key_entered_in_the_admin_is_stored_encrypted_and_never_shown(
    admin_client, openai_server
):
    response = admin_client.post(
        f"{PROVIDERS}add/",
        provider_form("vllm-box", openai_server.base_url, models=("qwen-small",), api_key=KEY),
    )
    assert response.status_code == 302, form_errors(response)

    provider = Provider.objects.get(name="vllm-box")
    assert provider.api_key_encrypted
    assert KEY not in provider.api_key_encrypted
    assert secrets.decrypt(provider.api_key_encrypted) == KEY
    assert provider.api_key() == KEY
    assert provider.api_key_hint == "set (…wxyz)"
    assert list(provider.models.values_list("name", flat=True)) == ["qwen-small"]

    change = admin_client.get(f"{PROVIDERS}{provider.pk}/change/")
    changelist = admin_client.get(PROVIDERS)
    for page in (change, changelist):
        assert page.status_code == 200
        html = text_of(page)
        assert KEY not in html
        assert provider.api_key_encrypted not in html
        assert "set (…wxyz)" in html
    # The key field is write-only: empty on the change page.
    assert re.search(r'<input type="password" name="api_key"[^>]*>', change.content.decode())
    assert 'name="api_key" value' not in change.content.decode()


def test_saving_the_change_form_without_a_key_keeps_the_stored_key(admin_client, openai_server):
    admin_client.post(
        f"{PROVIDERS}add/", provider_form("keep", openai_server.base_url, api_key=KEY)
    )
    provider = Provider.objects.get(name="keep")

    response = admin_client.post(
        f"{PROVIDERS}{provider.pk}/change/",
        provider_form("keep", openai_server.base_url, max_retries="2"),
    )

    assert response.status_code == 302, form_errors(response)
    provider.refresh_from_db()
    assert (provider.api_key(), provider.max_retries) == (KEY, 2)


def test_a_key_from_an_environment_variable_shows_where_it_comes_from(
    admin_client, openai_server, monkeypatch
):
    monkeypatch.setenv("LLMQA_PROVIDER_API_KEY", "sk-from-env-9876")
    response = admin_client.post(
        f"{PROVIDERS}add/",
        provider_form("env-key", openai_server.base_url, api_key_env="LLMQA_PROVIDER_API_KEY"),
    )
    assert response.status_code == 302, form_errors(response)
    provider = Provider.objects.get(name="env-key")
    assert provider.api_key_encrypted == ""

    html = text_of(admin_client.get(f"{PROVIDERS}{provider.pk}/change/"))
    assert "from $LLMQA_PROVIDER_API_KEY: set (…9876)" in html
    assert "sk-from-env-9876" not in html
    assert "from $LLMQA_PROVIDER_API_KEY: set (…9876)" in text_of(admin_client.get(PROVIDERS))

    monkeypatch.delenv("LLMQA_PROVIDER_API_KEY")
    html = text_of(admin_client.get(f"{PROVIDERS}{provider.pk}/change/"))
    assert "from $LLMQA_PROVIDER_API_KEY: not set" in html


def test_a_key_and_an_environment_variable_together_are_refused(admin_client, openai_server):
    response = admin_client.post(
        f"{PROVIDERS}add/",
        provider_form("both", openai_server.base_url, api_key=KEY, api_key_env="SOME_API_KEY"),
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "api_key": ["Give either a key or an environment variable, not both."]
    }
    assert not Provider.objects.filter(name="both").exists()
    assert KEY not in response.content.decode()  # not even echoed back in the form


def test_max_retries_above_five_is_refused(admin_client, openai_server):
    response = admin_client.post(
        f"{PROVIDERS}add/", provider_form("greedy", openai_server.base_url, max_retries="6")
    )

    assert form_errors(response) == {
        "max_retries": ["Ensure this value is less than or equal to 5."]
    }
    assert not Provider.objects.filter(name="greedy").exists()


# --- bad input: refused with a message on the field, nothing saved ----------------------------


def test_an_invalid_regex_in_a_routing_rule_is_refused_on_the_pattern(admin_client, support_agent):
    try:
        re.compile("(unclosed")
    except re.error as error:
        expected = f"Not a valid regular expression: {error}."

    response = admin_client.post(
        f"{RULES}add/",
        {
            "name": "broken",
            "priority": "10",
            "kind": "regex",
            "pattern": "(unclosed",
            "agent": str(support_agent.pk),
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert form_errors(response) == {"pattern": [expected]}
    assert expected in text_of(response)
    assert RoutingRule.objects.count() == 0


def test_the_same_text_as_a_keyword_rule_is_accepted(admin_client, support_agent):
    response = admin_client.post(
        f"{RULES}add/",
        {
            "name": "literal",
            "priority": "10",
            "kind": "keyword",
            "pattern": "(unclosed",
            "agent": str(support_agent.pk),
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    assert RoutingRule.objects.filter(name="literal", kind="keyword").exists()


def test_a_keyword_that_ends_with_a_symbol_still_matches_as_a_whole_word(support_agent):
    rule = RoutingRule(name="cpp", kind="keyword", pattern="C++", agent=support_agent)

    assert rule.matches("Do you sell C++ books?")
    assert not rule.matches("Do you sell C+++ books?")


def test_a_chain_with_an_inactive_model_is_refused_on_the_model(admin_client, support_agent):
    provider = provider_make(kind="openai", base_url="http://127.0.0.1:9/v1")
    retired = model_make(provider, name="retired-model", is_active=False)

    response = admin_client.post(
        agent_url(support_agent), agent_form(support_agent, new_links=(retired,))
    )

    assert response.status_code == 200
    assert inline_errors(response) == [{"model": ["retired-model is inactive."]}]
    assert "retired-model is inactive." in text_of(response)
    assert AgentModel.objects.filter(agent=support_agent).count() == 0


def test_a_chain_with_a_model_of_an_inactive_provider_is_refused(admin_client, support_agent):
    provider = provider_make(kind="openai", base_url="http://127.0.0.1:9/v1", is_active=False)
    orphan = model_make(provider, name="orphan-model")

    response = admin_client.post(
        agent_url(support_agent), agent_form(support_agent, new_links=(orphan,))
    )

    assert inline_errors(response) == [{"model": ["orphan-model is inactive."]}]
    assert AgentModel.objects.filter(agent=support_agent).count() == 0


def test_a_temperature_beyond_an_anthropic_model_in_the_chain_is_refused_on_the_temperature(
    admin_client, support_agent, anthropic_server
):
    claude = fake_model(anthropic_server, kind="anthropic", name="claude-test")
    chain_set(support_agent, claude)

    response = admin_client.post(
        agent_url(support_agent), agent_form(support_agent, temperature="1.5")
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "temperature": [
            "anthropic models take a temperature from 0.0 to 1.0 (claude-test is in the chain)."
        ]
    }
    support_agent.refresh_from_db()
    assert support_agent.temperature == 0.2


def test_adding_an_anthropic_model_to_a_hot_agent_is_refused_on_the_model(
    admin_client, support_agent, anthropic_server
):
    claude = fake_model(anthropic_server, kind="anthropic", name="claude-test")

    response = admin_client.post(
        agent_url(support_agent),
        agent_form(support_agent, new_links=(claude,), temperature="1.5"),
    )

    assert response.status_code == 200
    assert inline_errors(response) == [
        {
            "model": [
                "anthropic models take a temperature from 0.0 to 1.0; "
                "this agent's temperature is 1.5."
            ]
        }
    ]
    support_agent.refresh_from_db()
    assert support_agent.temperature == 0.2
    assert AgentModel.objects.filter(agent=support_agent).count() == 0


def test_a_new_agent_too_hot_for_the_anthropic_model_in_its_chain_is_refused(
    admin_client, support_agent, anthropic_server
):
    claude = fake_model(anthropic_server, kind="anthropic", name="claude-test")
    # The add form: the support agent's values under a new name, one chain row.
    data = agent_form(support_agent, new_links=(claude,), name="Hot", slug="hot")
    data["temperature"] = "1.5"
    del data["is_default"], data["chain_links-0-agent"]

    response = admin_client.post("/admin/agents/agent/add/", data)

    assert not Agent.objects.filter(slug="hot").exists()
    assert response.status_code == 200
    assert inline_errors(response) == [
        {
            "model": [
                "anthropic models take a temperature from 0.0 to 1.0; "
                "this agent's temperature is 1.5."
            ]
        }
    ]


def test_a_temperature_above_two_is_refused_for_every_provider(admin_client, support_agent):
    response = admin_client.post(
        agent_url(support_agent), agent_form(support_agent, temperature="2.5")
    )

    assert form_errors(response) == {
        "temperature": ["Ensure this value is less than or equal to 2.0."]
    }


def test_an_unregistered_tool_is_refused_on_the_tools(admin_client, support_agent):
    response = admin_client.post(
        agent_url(support_agent), agent_form(support_agent, tools=["escalate", "nope"])
    )

    assert response.status_code == 200
    assert form_errors(response) == {
        "tools": ["Select a valid choice. nope is not one of the available choices."]
    }
    support_agent.refresh_from_db()
    assert support_agent.tools == []


def test_registered_tools_and_a_valid_chain_are_saved(admin_client, support_agent, openai_server):
    gpt = fake_model(openai_server, name="gpt-test")

    response = admin_client.post(
        agent_url(support_agent),
        agent_form(
            support_agent,
            new_links=(gpt, local_model()),
            tools=["escalate", "resolve_conversation"],
            temperature="1.5",
        ),
    )

    assert response.status_code == 302, (form_errors(response), inline_errors(response))
    support_agent.refresh_from_db()
    assert support_agent.tools == ["escalate", "resolve_conversation"]
    assert support_agent.temperature == 1.5
    assert [m.name for m in snapshot.model_chain(support_agent)] == ["gpt-test", "local"]
    assert "gpt-test → local" in text_of(admin_client.get("/admin/agents/agent/"))


# --- test connection ------------------------------------------------------------------------


@pytest.fixture
def provider(openai_server):
    provider = provider_make(openai_server, name="fake-openai")
    model_make(provider, name="gpt-ping")
    return provider


def run_action(admin_client, provider: Provider):
    return admin_client.post(
        PROVIDERS,
        {"action": "test_connection", "_selected_action": [str(provider.pk)]},
        follow=True,
    )


def test_test_connection_reports_the_latency_of_one_tiny_call(
    admin_client, openai_server, provider
):
    openai_server.plan(TextReply("ok"))

    response = run_action(admin_client, provider)

    [(level, message)] = messages_of(response)
    assert level == "success"
    assert re.fullmatch(r"fake-openai: gpt-ping answered in \d+ ms: 'ok'", message), message
    [request] = openai_server.requests
    assert request.json["model"] == "gpt-ping"
    assert request.json["max_tokens"] == 5
    assert request.json["messages"] == [
        {"role": "user", "content": "Reply with the single word: ok"}
    ]


def test_test_connection_against_a_stopped_server_reports_the_error(
    admin_client, openai_server, provider
):
    openai_server.stop()

    response = run_action(admin_client, provider)

    [(level, message)] = messages_of(response)
    assert level == "error"
    assert message == (
        "fake-openai: gpt-ping failed: connection (openai: connection failed (ConnectError))"
    )


def test_test_connection_reports_an_http_error_without_the_key(admin_client, openai_server):
    provider = provider_make(openai_server, name="keyed")
    provider.set_api_key(KEY)
    provider.save()
    model_make(provider, name="gpt-keyed")
    openai_server.plan(ErrorReply(401, f"Incorrect API key provided: {KEY}", "invalid_api_key"))

    [(level, message)] = messages_of(run_action(admin_client, provider))

    assert level == "error"
    assert message.startswith("keyed: gpt-keyed failed: auth (openai: HTTP 401: ")
    assert KEY not in message
    assert "[redacted]" in message
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_test_connection_without_a_model_says_what_to_do(admin_client, openai_server):
    provider = provider_make(openai_server, name="empty")

    [(level, message)] = messages_of(run_action(admin_client, provider))

    assert (level, message) == ("error", "empty: no active model to call: add one first.")
    assert openai_server.calls == 0


# --- health in the admin ----------------------------------------------------------------------


def test_the_admin_shows_an_open_circuit_and_the_last_error(admin_client, openai_server):
    model = fake_model(openai_server, breaker_fail_max=1, name=unique("gpt-flaky"))
    openai_server.plan(ErrorReply(500))
    with pytest.raises(router.AllModelsFailed):
        complete(chain=[model], request_for=request_for(), callbacks=RouterSpy().callbacks())

    providers = text_of(admin_client.get(PROVIDERS))
    assert f"{model.name}: open" in providers
    models = text_of(admin_client.get(MODELS))
    assert re.search(
        r"circuit open, last call \d+ ms, last error server at \d{4}-\d\d-\d\dT", models
    ), models
    change = text_of(admin_client.get(f"{PROVIDERS}{model.provider_id}/change/"))
    assert "circuit open" in change


def test_the_turn_page_shows_its_tool_steps_and_usage(admin_client, conversation, support_agent):
    support_agent.tools = ["handoff_to_human"]
    support_agent.save()
    turn = submit(conversation, "Can I talk to a real person please?").turn
    drain_conversation(conversation.pk)

    html = text_of(admin_client.get(f"/admin/conversations/turn/{turn.pk}/change/"))

    assert "handoff_to_human" in html
    assert "The customer asked for a person." in html
    assert "model calls (usage)" in html.lower()
    assert UsageRecord.objects.filter(turn=turn).count() == 1


# --- the new user's walk-through (issue 4 acceptance) --------------------------------------------


def configure_through_the_admin(admin_client, server: FakeOpenAIServer, support_agent) -> LLMModel:
    """Add an OpenAI-compatible provider for the fake server with its model, with the form's
    defaults, and put the model in front of the local model in the agent's chain."""
    response = admin_client.post(
        f"{PROVIDERS}add/", provider_form("my-vllm", server.base_url, models=("my-model",))
    )
    assert response.status_code == 302, form_errors(response)
    model = LLMModel.objects.get(name="my-model")
    response = admin_client.post(
        agent_url(support_agent), agent_form(support_agent, new_links=(model, local_model()))
    )
    assert response.status_code == 302, (form_errors(response), inline_errors(response))
    return model


def chat(conversation, text: str) -> Turn:
    turn = submit(conversation, text).turn
    drain_conversation(conversation.pk)
    turn.refresh_from_db()
    return turn


def test_a_new_user_adds_a_provider_chats_stops_the_server_and_still_gets_answers(
    admin_client, conversation, support_agent, fast_backoff
):
    server = FakeOpenAIServer().start()
    try:
        model = configure_through_the_admin(admin_client, server, support_agent)
        server.plan(TextReply("Hello from my own model."))
        first = chat(conversation, "Hello?")
        assert first.output == "Hello from my own model."
        assert usage_of(first) == [("my-model", 1, "ok", "")]
    finally:
        server.stop()

    second = chat(conversation, "Still there?")

    assert second.status == Turn.Status.COMPLETED
    assert second.output == local_model_reply(("system", SUPPORT_PROMPT), ("user", "Still there?"))
    # The defaults: the third refused connection opens the circuit (breaker_fail_max 3),
    # so the fourth attempt (max_retries 3) is not made: straight to the fallback.
    assert usage_of(second) == [
        ("my-model", 1, "error", "connection"),
        ("my-model", 2, "error", "connection"),
        ("my-model", 3, "error", "connection"),
        ("local", 1, "ok", ""),
    ]
    assert "circuit open, last call" in text_of(admin_client.get(MODELS))
    assert "last error connection" in text_of(admin_client.get(MODELS))
    assert model.provider.max_retries == 3


def test_after_the_server_stops_one_chat_is_enough_for_the_admin_to_show_the_open_circuit(
    admin_client, conversation, support_agent, fast_backoff
):
    server = FakeOpenAIServer().start()
    try:
        configure_through_the_admin(admin_client, server, support_agent)
        server.plan(TextReply("Hello from my own model."))
        chat(conversation, "Hello?")
    finally:
        server.stop()

    chat(conversation, "Still there?")

    assert "my-model: open" in text_of(admin_client.get(PROVIDERS))


def test_the_turn_list_shows_the_newest_conversations_first_then_turns_by_number(
    admin_client, alice, support_agent
):
    older = conversation_make(owner=alice, agent=support_agent)
    newer = conversation_make(owner=alice, agent=support_agent)
    for conversation, texts in ((older, ["one", "two"]), (newer, ["three"])):
        for number, text in enumerate(texts, start=1):
            submit(conversation, text, f"msg-{number}")

    html = text_of(admin_client.get("/admin/conversations/turn/"))

    listed = re.findall(r"([0-9a-f-]{36}) #(\d)", html)
    assert listed == [(str(newer.pk), "1"), (str(older.pk), "1"), (str(older.pk), "2")]
