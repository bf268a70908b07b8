"""Configuration as code: `manage.py orchestra_config export` and `apply`
(docs/configuration.md)."""

import copy
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.config_io import config_export, config_validate
from agents.models import Agent, AgentModel, LLMModel, Provider, RoutingRule
from agents.snapshot import model_chain

pytestmark = pytest.mark.django_db

CONFIG_MODELS = (Provider, LLMModel, Agent, AgentModel, RoutingRule)
SUPPORT_PROMPT = "You are the support agent of a small shop.\nAnswer briefly."

LOCAL_PROVIDER = {
    "name": "local",
    "kind": "local",
    "timeout_s": 60.0,
    "connect_timeout_s": 5.0,
    "max_retries": 3,
    "breaker_fail_max": 5,
    "breaker_reset_s": 30,
    "active": True,
}
LOCAL_MODEL = {
    "name": "local",
    "provider": "local",
    "context_window": 32000,
    "max_output_tokens": 1024,
    "supports_tools": True,
    "active": True,
}
# What the `configured` fixture exports: every field, ordered by natural key.
CONFIGURED_EXPORT = {
    "providers": [
        {
            "name": "anthropic-main",
            "kind": "anthropic",
            "api_key_env": "ANTHROPIC_API_KEY",
            "timeout_s": 60.0,
            "connect_timeout_s": 3.0,
            "max_retries": 3,
            "breaker_fail_max": 3,
            "breaker_reset_s": 60,
            "active": True,
        },
        LOCAL_PROVIDER,
        {
            "name": "openai-main",
            "kind": "openai",
            "base_url": "https://llm.example.com/v1",
            "api_key_env": "OPENAI_API_KEY",
            "timeout_s": 30.0,
            "connect_timeout_s": 5.0,
            "max_retries": 2,
            "breaker_fail_max": 3,
            "breaker_reset_s": 30,
            "active": True,
        },
    ],
    "models": [
        {
            "name": "claude-main",
            "provider": "anthropic-main",
            "context_window": 200000,
            "max_output_tokens": 8192,
            "supports_tools": True,
            "active": True,
        },
        {
            "name": "gpt-main",
            "provider": "openai-main",
            "context_window": 128000,
            "max_output_tokens": 4096,
            "supports_tools": True,
            "active": True,
        },
        {
            "name": "gpt-old",
            "provider": "openai-main",
            "context_window": 8192,
            "max_output_tokens": 1024,
            "supports_tools": False,
            "active": False,
        },
        LOCAL_MODEL,
    ],
    "agents": [
        {
            "slug": "sales",
            "name": "Sales",
            "description": "",
            "system_prompt": "",
            "models": ["claude-main"],
            "tools": [],
            "double_text": "reject",
            "anti_echo": "off",
            "echo_threshold": 0.8,
            "echo_window": 5,
            "temperature": 0.7,
            "max_output_tokens": 500,
            "max_tool_steps": 3,
            "escalate_mood_below": None,
            "escalate_after_turns": 5,
            "active": True,
            "default": False,
        },
        {
            "slug": "support",
            "name": "Customer support",
            "description": "Orders, shipping and products.",
            "system_prompt": SUPPORT_PROMPT,
            "models": ["gpt-main", "local"],
            "tools": ["resolve_conversation", "handoff_to_human"],
            "double_text": "enqueue",
            "anti_echo": "regenerate",
            "echo_threshold": 0.9,
            "echo_window": 10,
            "temperature": 0.2,
            "max_output_tokens": 800,
            "max_tool_steps": 6,
            "escalate_mood_below": -0.5,
            "escalate_after_turns": 3,
            "active": True,
            "default": True,
        },
    ],
    "routing_rules": [
        {
            "name": "quotes",
            "priority": 20,
            "kind": "regex",
            "pattern": r"\b(quote|price)s?\b",
            "agent": "sales",
            "active": False,
        },
        {
            "name": "refunds",
            "priority": 10,
            "kind": "keyword",
            "pattern": "refund",
            "agent": "support",
            "active": True,
        },
    ],
}

# A hand-written file in the docs/configuration.md shape: fields left out take their defaults.
HAND_WRITTEN = {
    "providers": [
        {
            "name": "openai-main",
            "kind": "openai",
            "base_url": "https://llm.example.com/v1",
            "api_key_env": "OPENAI_API_KEY",
            "timeout_s": 30,
            "max_retries": 3,
            "breaker_fail_max": 5,
            "breaker_reset_s": 30,
        }
    ],
    "models": [{"name": "gpt-main", "provider": "openai-main", "context_window": 128000}],
    "agents": [
        {
            "slug": "support",
            "name": "Customer support",
            "system_prompt": "You are …",
            "models": ["gpt-main", "local"],
            "tools": ["resolve_conversation", "handoff_to_human"],
            "double_text": "enqueue",
            "anti_echo": "regenerate",
            "default": True,
        }
    ],
    "routing_rules": [
        {
            "name": "refunds",
            "priority": 10,
            "kind": "keyword",
            "pattern": "refund",
            "agent": "support",
        }
    ],
}


@pytest.fixture
def configured(db) -> None:
    openai = Provider.objects.create(
        name="openai-main",
        kind="openai",
        base_url="https://llm.example.com/v1",
        api_key_env="OPENAI_API_KEY",
        read_timeout_s=30,
        max_retries=2,
    )
    anthropic = Provider.objects.create(
        name="anthropic-main",
        kind="anthropic",
        api_key_env="ANTHROPIC_API_KEY",
        connect_timeout_s=3.0,
        breaker_fail_max=3,
        breaker_reset_s=60,
    )
    gpt = LLMModel.objects.create(
        name="gpt-main", provider=openai, context_window=128000, max_output_tokens=4096
    )
    claude = LLMModel.objects.create(
        name="claude-main", provider=anthropic, context_window=200000, max_output_tokens=8192
    )
    LLMModel.objects.create(name="gpt-old", provider=openai, supports_tools=False, is_active=False)
    support = Agent.objects.create(
        slug="support",
        name="Customer support",
        description="Orders, shipping and products.",
        system_prompt=SUPPORT_PROMPT,
        tools=["resolve_conversation", "handoff_to_human"],
        anti_echo="regenerate",
        escalate_mood_below=-0.5,
        is_default=True,
    )
    # positions out of insertion order: the export follows `position`
    AgentModel.objects.create(agent=support, model=LLMModel.objects.get(name="local"), position=1)
    AgentModel.objects.create(agent=support, model=gpt, position=0)
    sales = Agent.objects.create(
        slug="sales",
        name="Sales",
        temperature=0.7,
        double_text="reject",
        anti_echo="off",
        echo_threshold=0.8,
        echo_window=5,
        max_output_tokens=500,
        max_tool_steps=3,
        escalate_after_turns=5,
    )
    AgentModel.objects.create(agent=sales, model=claude, position=0)
    RoutingRule.objects.create(
        name="refunds", priority=10, kind="keyword", pattern="refund", agent=support
    )
    RoutingRule.objects.create(
        name="quotes",
        priority=20,
        kind="regex",
        pattern=r"\b(quote|price)s?\b",
        agent=sales,
        is_active=False,
    )


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("orchestra_config", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def write(tmp_path: Path, data, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in CONFIG_MODELS}


def snapshot() -> dict[str, list[dict]]:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in CONFIG_MODELS}


def flush_configuration() -> None:
    RoutingRule.objects.all().delete()
    AgentModel.objects.all().delete()
    Agent.objects.all().delete()
    LLMModel.objects.exclude(name="local").delete()
    Provider.objects.exclude(name="local").delete()


# --- export -----------------------------------------------------------------------------


def test_export_of_a_configured_database_is_exactly_the_expected_file(configured):
    stdout, stderr = run("export")

    assert yaml.safe_load(stdout) == CONFIGURED_EXPORT
    assert config_export() == CONFIGURED_EXPORT
    assert stderr == ""
    # the design's shape and key order; a multi-line prompt stays readable
    assert stdout.startswith("providers:\n- name: anthropic-main\n  kind: anthropic\n")
    assert "  system_prompt: |-\n    You are the support agent of a small shop.\n" in stdout


def test_export_writes_the_file_given_with_output(configured, tmp_path):
    path = tmp_path / "orchestra.yaml"

    stdout, stderr = run("export", "--output", str(path))

    assert stdout == ""
    assert yaml.safe_load(path.read_text()) == CONFIGURED_EXPORT
    assert stderr == f"Wrote {path}: 3 providers, 4 models, 2 agents, 2 routing_rules.\n"


def test_a_provider_with_an_encrypted_key_is_exported_without_it_and_warns(db):
    vault = Provider(name="vault", kind="anthropic")
    vault.set_api_key("sk-ant-secret-1234")
    vault.save()

    stdout, stderr = run("export")

    exported = next(p for p in yaml.safe_load(stdout)["providers"] if p["name"] == "vault")
    assert exported == {
        "name": "vault",
        "kind": "anthropic",
        "timeout_s": 60.0,
        "connect_timeout_s": 5.0,
        "max_retries": 3,
        "breaker_fail_max": 3,
        "breaker_reset_s": 30,
        "active": True,
    }
    assert "secret" not in stdout
    assert vault.api_key_encrypted not in stdout
    assert stderr == "warning: provider vault: its stored key is not exported; set api_key_env\n"


def test_applying_the_export_back_keeps_an_encrypted_key(db, tmp_path):
    vault = Provider(name="vault", kind="anthropic")
    vault.set_api_key("sk-ant-secret-1234")
    vault.save()
    path = write(tmp_path, run("export")[0])

    stdout, _ = run("apply", path)

    assert stdout.splitlines() == [
        "= provider local",
        "= provider vault",
        "= model local",
        "0 created, 0 changed, 0 deactivated, 3 unchanged",
    ]
    vault.refresh_from_db()
    assert vault.api_key() == "sk-ant-secret-1234"


# --- apply ------------------------------------------------------------------------------


def test_export_then_apply_on_a_fresh_database_reproduces_the_configuration(configured, tmp_path):
    path = tmp_path / "orchestra.yaml"
    run("export", "--output", str(path))
    flush_configuration()
    assert counts() == {
        "Provider": 1,
        "LLMModel": 1,
        "Agent": 0,
        "AgentModel": 0,
        "RoutingRule": 0,
    }

    stdout, _ = run("apply", str(path))

    assert stdout.splitlines() == [
        "+ provider anthropic-main",
        "= provider local",
        "+ provider openai-main",
        "+ model claude-main",
        "+ model gpt-main",
        "+ model gpt-old",
        "= model local",
        "+ agent sales",
        "+ agent support",
        "+ rule quotes",
        "+ rule refunds",
        "9 created, 0 changed, 0 deactivated, 2 unchanged",
    ]
    assert config_export() == CONFIGURED_EXPORT
    support = Agent.objects.get(slug="support")
    assert [m.name for m in model_chain(support)] == ["gpt-main", "local"]
    assert list(support.chain_links.values_list("position", flat=True)) == [0, 1]


def test_applying_a_file_twice_changes_nothing_the_second_time(db, tmp_path):
    path = write(tmp_path, HAND_WRITTEN)

    first, _ = run("apply", path)
    before = snapshot()
    second, _ = run("apply", path)

    assert first.splitlines() == [
        "+ provider openai-main",
        "+ model gpt-main",
        "+ agent support",
        "+ rule refunds",
        "4 created, 0 changed, 0 deactivated, 0 unchanged",
    ]
    assert second.splitlines() == [
        "= provider openai-main",
        "= model gpt-main",
        "= agent support",
        "= rule refunds",
        "0 created, 0 changed, 0 deactivated, 4 unchanged",
    ]
    # same rows, same values, `updated_at` included
    assert snapshot() == before
    support = Agent.objects.get(slug="support")
    assert support.is_default
    assert support.temperature == 0.2  # left out: the default
    assert [m.name for m in model_chain(support)] == ["gpt-main", "local"]
    assert Provider.objects.get(name="openai-main").read_timeout_s == 30.0


def test_the_export_of_a_configured_database_applies_as_a_no_op(configured, tmp_path):
    # gpt-old is retired: a link the agent already has is kept, not refused
    sales, retired = Agent.objects.get(slug="sales"), LLMModel.objects.get(name="gpt-old")
    AgentModel.objects.create(agent=sales, model=retired, position=1)
    path = write(tmp_path, run("export")[0])
    before = snapshot()

    stdout, _ = run("apply", path)

    assert stdout.splitlines()[-1] == "0 created, 0 changed, 0 deactivated, 11 unchanged"
    assert snapshot() == before


def test_the_plan_names_what_changes(configured, tmp_path):
    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["providers"].append(
        {"name": "openai-two", "kind": "openai", "base_url": "http://vllm.internal:8000/v1"}
    )
    support = data["agents"][1]
    support["models"] = ["local", "gpt-main"]
    support["tools"] = ["escalate"]
    data["routing_rules"][0]["active"] = True
    data["routing_rules"][0]["priority"] = 5
    path = write(tmp_path, data)

    stdout, _ = run("apply", path)

    assert stdout.splitlines() == [
        "= provider anthropic-main",
        "= provider local",
        "= provider openai-main",
        "+ provider openai-two",
        "= model claude-main",
        "= model gpt-main",
        "= model gpt-old",
        "= model local",
        "= agent sales",
        "~ agent support: models, tools",
        "~ rule quotes: priority, active",
        "= rule refunds",
        "1 created, 2 changed, 0 deactivated, 9 unchanged",
    ]
    assert config_export() == {
        **data,
        "providers": [
            *data["providers"][:3],
            {
                "name": "openai-two",
                "kind": "openai",
                "base_url": "http://vllm.internal:8000/v1",
                "timeout_s": 60.0,
                "connect_timeout_s": 5.0,
                "max_retries": 3,
                "breaker_fail_max": 3,
                "breaker_reset_s": 30,
                "active": True,
            },
        ],
    }
    links = AgentModel.objects.filter(agent__slug="support").order_by("position")
    assert [(link.position, link.model.name) for link in links] == [(0, "local"), (1, "gpt-main")]


def test_an_unchanged_chain_is_not_rewritten(configured, tmp_path):
    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["agents"][1]["tools"] = ["escalate"]
    links = AgentModel.objects.filter(agent__slug="support")
    link_ids = sorted(links.values_list("pk", flat=True))

    stdout, _ = run("apply", write(tmp_path, data))

    assert "~ agent support: tools" in stdout.splitlines()
    assert sorted(links.values_list("pk", flat=True)) == link_ids


def test_the_default_can_move_from_one_agent_to_another(configured, tmp_path):
    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["agents"][0]["default"] = True  # sales, listed before support
    data["agents"][1]["default"] = False

    stdout, _ = run("apply", write(tmp_path, data))

    assert "~ agent sales: default" in stdout
    assert "~ agent support: default" in stdout
    assert list(Agent.objects.filter(is_default=True).values_list("slug", flat=True)) == ["sales"]


def test_a_dry_run_prints_the_plan_and_writes_nothing(configured, tmp_path):
    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["agents"][1]["temperature"] = 0.5
    data["models"].append({"name": "gpt-next", "provider": "openai-main"})
    before = snapshot()

    stdout, _ = run("apply", write(tmp_path, data), "--dry-run")

    assert "~ agent support: temperature" in stdout.splitlines()
    assert "+ model gpt-next" in stdout.splitlines()
    assert stdout.splitlines()[-1] == (
        "Dry run: nothing written (would be 1 created, 1 changed, 0 deactivated, 10 unchanged)."
    )
    assert snapshot() == before


# --- deactivation: a section is the whole configuration of its kind ---------------------


def without(entries: list[dict], *names: str) -> list[dict]:
    return [
        copy.deepcopy(entry)
        for entry in entries
        if entry.get("slug", entry.get("name")) not in names
    ]


def active(model, name: str) -> bool:
    key = "slug" if model is Agent else "name"
    return model.objects.get(**{key: name}).is_active


def test_active_objects_a_section_leaves_out_are_deactivated_never_deleted(configured, tmp_path):
    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["providers"] = without(data["providers"], "anthropic-main")
    # gpt-old is inactive already: left out, nothing to do
    data["models"] = without(data["models"], "claude-main", "gpt-old")
    data["routing_rules"] = without(data["routing_rules"], "refunds")
    path = write(tmp_path, data)
    before, before_counts = snapshot(), counts()

    dry, _ = run("apply", path, "--dry-run")
    first, _ = run("apply", path)

    plan = [
        "= provider local",
        "= provider openai-main",
        "- provider anthropic-main",
        "= model gpt-main",
        "= model local",
        "- model claude-main",
        "= agent sales",
        "= agent support",
        "= rule quotes",
        "- rule refunds",
    ]
    assert dry.splitlines() == [
        *plan,
        "Dry run: nothing written (would be 0 created, 0 changed, 3 deactivated, 7 unchanged).",
    ]
    assert first.splitlines() == [*plan, "0 created, 0 changed, 3 deactivated, 7 unchanged"]
    assert counts() == before_counts  # nothing deleted
    assert not active(Provider, "anthropic-main")
    assert not active(LLMModel, "claude-main")
    assert not active(LLMModel, "gpt-old")
    assert not active(RoutingRule, "refunds")
    expected = copy.deepcopy(CONFIGURED_EXPORT)
    expected["providers"][0]["active"] = False
    expected["models"][0]["active"] = False
    expected["routing_rules"][1]["active"] = False
    assert config_export() == expected
    # sales keeps its link to the retired claude-main: the router skips it
    sales = Agent.objects.get(slug="sales")
    assert list(sales.chain_links.values_list("model__name", flat=True)) == ["claude-main"]
    assert [m.name for m in model_chain(sales)] == ["local"]
    assert snapshot()["Agent"] == before["Agent"]

    # applying the same file again changes nothing
    after = snapshot()
    second, _ = run("apply", path)

    assert second.splitlines() == [
        *(line for line in plan if not line.startswith("-")),
        "0 created, 0 changed, 0 deactivated, 7 unchanged",
    ]
    assert snapshot() == after


def test_a_section_the_file_leaves_out_is_untouched(configured, tmp_path):
    data = {"routing_rules": without(CONFIGURED_EXPORT["routing_rules"], "refunds")}
    before = snapshot()

    stdout, _ = run("apply", write(tmp_path, data))

    assert stdout.splitlines() == [
        "= rule quotes",
        "- rule refunds",
        "0 created, 0 changed, 1 deactivated, 1 unchanged",
    ]
    after = snapshot()
    for model in ("Provider", "LLMModel", "Agent", "AgentModel"):
        assert after[model] == before[model]


def test_an_empty_section_key_is_left_out_but_an_empty_list_deactivates_all(configured, tmp_path):
    before = snapshot()

    stdout, _ = run("apply", write(tmp_path, "providers:\nrouting_rules:\n"))

    assert stdout == "0 created, 0 changed, 0 deactivated, 0 unchanged\n"
    assert snapshot() == before

    stdout, _ = run("apply", write(tmp_path, {"routing_rules": []}))

    assert stdout.splitlines() == [
        "- rule refunds",
        "0 created, 0 changed, 1 deactivated, 0 unchanged",
    ]
    assert not RoutingRule.objects.filter(is_active=True).exists()


def test_the_local_provider_and_model_are_never_deactivated(configured, tmp_path):
    before_agents = snapshot()["Agent"]

    stdout, _ = run("apply", write(tmp_path, {"providers": [], "models": []}))

    assert stdout.splitlines() == [
        "- provider anthropic-main",
        "- provider openai-main",
        "- model claude-main",
        "- model gpt-main",
        "0 created, 0 changed, 4 deactivated, 0 unchanged",
    ]
    assert list(Provider.objects.filter(is_active=True).values_list("name", flat=True)) == ["local"]
    assert list(LLMModel.objects.filter(is_active=True).values_list("name", flat=True)) == ["local"]
    # the agents' chains now point at inactive models: kept, and skipped by the router
    assert snapshot()["Agent"] == before_agents
    support = Agent.objects.get(slug="support")
    assert [m.name for m in model_chain(support)] == ["local"]


def test_a_deactivated_default_agent_gives_the_default_to_the_one_the_file_names(
    configured, tmp_path
):
    sales = {**CONFIGURED_EXPORT["agents"][0], "default": True}

    stdout, _ = run("apply", write(tmp_path, {"agents": [sales]}))

    assert stdout.splitlines() == [
        "~ agent sales: default",
        "- agent support",
        "0 created, 1 changed, 1 deactivated, 0 unchanged",
    ]
    support = Agent.objects.get(slug="support")
    assert (support.is_active, support.is_default) == (False, False)
    assert list(Agent.objects.filter(is_default=True).values_list("slug", flat=True)) == ["sales"]
    # rules are not in the file: refunds still names support, the router skips it
    assert active(RoutingRule, "refunds")


@pytest.mark.parametrize("agents", [[CONFIGURED_EXPORT["agents"][0]], []], ids=["sales", "none"])
def test_deactivating_the_default_agent_without_naming_another_is_refused(
    configured, tmp_path, agents
):
    path = write(tmp_path, {"agents": agents})
    before = snapshot()

    with pytest.raises(CommandError) as raised:
        run("apply", path, "--dry-run")
    with pytest.raises(CommandError) as raised:
        run("apply", path)

    assert str(raised.value).splitlines() == [
        f"{path}: 1 error, nothing was written:",
        "  - agents: the default agent support is not in the file; name a default",
    ]
    assert snapshot() == before


def test_a_new_reference_to_an_object_the_file_deactivates_is_refused(configured):
    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["models"] = without(data["models"], "gpt-main")
    # support keeps its link to gpt-main (fine); sales gains one (refused)
    data["agents"][0]["models"] = ["claude-main", "gpt-main"]

    assert config_validate(data=data) == [
        "agents[0] (slug=sales): models: gpt-main is not in the file's models: it is deactivated"
    ]

    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["providers"] = without(data["providers"], "anthropic-main")
    data["models"].append({"name": "claude-next", "provider": "anthropic-main"})
    data["agents"][1]["models"] = ["gpt-main", "claude-next"]

    assert config_validate(data=data) == [
        "agents[1] (slug=support): models: claude-next is inactive: its provider "
        "anthropic-main is not in the file"
    ]

    data = copy.deepcopy(CONFIGURED_EXPORT)
    data["agents"] = without(data["agents"], "sales")
    assert config_validate(data=data) == []  # quotes is unchanged (and inactive)

    data["routing_rules"][0]["active"] = True
    assert config_validate(data=data) == [
        "routing_rules[0] (name=quotes): agent: sales is not in the file's agents: "
        "it is deactivated"
    ]


# --- invalid files: nothing is written, the error names the entry ------------------------

# Valid entries of every kind, around the one broken entry each case adds (at index 1); the
# configured objects follow, so that the file deactivates nothing.
VALID_NEIGHBOURS = {
    "providers": [
        {"name": "openai-two", "kind": "openai", "base_url": "http://vllm.internal:8000/v1"}
    ],
    "models": [{"name": "llama", "provider": "openai-two", "context_window": 32768}],
    "agents": [{"slug": "billing", "name": "Billing", "models": ["llama", "gpt-main"]}],
    "routing_rules": [
        {"name": "invoices", "kind": "regex", "pattern": r"invoice\s*#?\d+", "agent": "billing"}
    ],
}

INVALID_CASES = {
    "invalid regex": (
        "routing_rules",
        {"name": "bad-regex", "kind": "regex", "pattern": "(refund", "agent": "support"},
        "routing_rules[1] (name=bad-regex): pattern: not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
    ),
    "unknown tool": (
        "agents",
        {"slug": "broken", "name": "Broken", "tools": ["escalate", "fly_to_the_moon"]},
        "agents[1] (slug=broken): tools: not registered: fly_to_the_moon",
    ),
    "unknown model in a chain": (
        "agents",
        {"slug": "broken", "name": "Broken", "models": ["local", "gpt-9"]},
        "agents[1] (slug=broken): models: unknown model: gpt-9 "
        "(neither in the file nor in the database)",
    ),
    "inactive model in a chain": (
        "agents",
        {"slug": "broken", "name": "Broken", "models": ["gpt-old"]},
        "agents[1] (slug=broken): models: gpt-old is inactive",
    ),
    "temperature out of range for an anthropic model": (
        "agents",
        {"slug": "broken", "name": "Broken", "models": ["claude-main"], "temperature": 1.5},
        "agents[1] (slug=broken): temperature: anthropic models take a temperature "
        "from 0.0 to 1.0 (claude-main is in the chain)",
    ),
    "duplicate agent slug": (
        "agents",
        {"slug": "billing", "name": "Billing again"},
        "agents[1] (slug=billing): slug: duplicate of agents[0]",
    ),
    "plaintext api_key": (
        "providers",
        {"name": "leaky", "kind": "anthropic", "api_key": "sk-ant-plaintext"},
        "providers[1] (name=leaky): api_key: secrets are never in the file: use api_key_env",
    ),
    "unknown provider of a model": (
        "models",
        {"name": "mistral", "provider": "nowhere"},
        "models[1] (name=mistral): provider: unknown provider: nowhere "
        "(neither in the file nor in the database)",
    ),
    "unknown field": (
        "agents",
        {"slug": "broken", "name": "Broken", "temprature": 0.3},
        "agents[1] (slug=broken): temprature: unknown field (did you mean temperature?)",
    ),
    "missing required field": (
        "routing_rules",
        {"name": "no-agent", "pattern": "refund"},
        "routing_rules[1] (name=no-agent): agent: required",
    ),
    "wrong type": (
        "providers",
        {"name": "slow", "kind": "anthropic", "max_retries": "three"},
        "providers[1] (name=slow): max_retries: expected an integer, got str",
    ),
    "unknown kind": (
        "providers",
        {"name": "gemini", "kind": "google"},
        "providers[1] (name=gemini): kind: must be one of openai, anthropic, local",
    ),
    "a model's own validation (full_clean)": (
        "models",
        {"name": "tiny", "provider": "local", "context_window": 512, "max_output_tokens": 512},
        "models[1] (name=tiny): max_output_tokens: Must be smaller than the context window.",
    ),
    "a second default agent": (
        "agents",
        {"slug": "broken", "name": "Broken", "default": True},
        [
            "agents[1] (slug=broken): default: more than one default agent: broken, support",
            "agents[3] (slug=support): default: more than one default agent: broken, support",
        ],
    ),
}


@pytest.mark.parametrize(
    ("section", "broken", "expected"), INVALID_CASES.values(), ids=INVALID_CASES.keys()
)
def test_one_invalid_entry_among_valid_ones_writes_nothing(
    configured, tmp_path, section, broken, expected
):
    data = {
        key: [*neighbours, *([broken] if key == section else []), *CONFIGURED_EXPORT[key]]
        for key, neighbours in copy.deepcopy(VALID_NEIGHBOURS).items()
    }
    expected = [expected] if isinstance(expected, str) else expected
    before = snapshot()

    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, data))

    count = f"{len(expected)} error{'s' if len(expected) > 1 else ''}"
    assert str(raised.value).splitlines() == [
        f"{tmp_path / 'config.yaml'}: {count}, nothing was written:",
        *(f"  - {error}" for error in expected),
    ]
    assert config_validate(data=data) == expected
    assert snapshot() == before  # not even the valid neighbours


def test_a_yaml_syntax_error_names_the_line_and_writes_nothing(configured, tmp_path):
    path = write(
        tmp_path,
        "providers:\n  - name: openai-two\n    kind: [openai\nmodels: []\n",
    )
    before = snapshot()

    with pytest.raises(CommandError) as raised:
        run("apply", path)

    assert str(raised.value) == (
        f"{path}: 1 error, nothing was written:\n"
        "  - not valid YAML at line 4, column 7: expected ',' or ']', but got ':'"
    )
    assert snapshot() == before


def test_a_key_given_twice_in_an_entry_is_an_error(configured, tmp_path):
    path = write(tmp_path, "providers:\n  - name: a\n    kind: openai\n    kind: local\n")

    with pytest.raises(CommandError, match="line 4, column 5: found the key 'kind' twice"):
        run("apply", path)


def test_every_error_of_the_file_is_listed(configured, tmp_path):
    data = {
        "provider": [],
        "agents": [
            {
                "slug": "one",
                "name": "One",
                "tools": ["nope"],
                "double_text": "shout",
                "echo_threshold": 5,
            },
            {"slug": "two", "name": "Two", "models": ["claude-main"], "temperature": 1.5},
            "three",
        ],
        "routing_rules": [{"name": "r", "pattern": "x", "agent": "ghost", "priority": 1.5}],
    }
    before = snapshot()

    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, data))

    # the file's own errors, then each entry's, in file order
    assert str(raised.value).splitlines() == [
        f"{tmp_path / 'config.yaml'}: 9 errors, nothing was written:",
        "  - provider: unknown section (expected one of: providers, models, agents, routing_rules)",
        "  - agents: the default agent support is not in the file; name a default",
        "  - agents[0] (slug=one): double_text: must be one of enqueue, reject, interrupt",
        "  - agents[0] (slug=one): tools: not registered: nope",
        "  - agents[0] (slug=one): echo_threshold: Ensure this value is less than or equal to 1.0.",
        "  - agents[1] (slug=two): temperature: anthropic models take a temperature from 0.0 "
        "to 1.0 (claude-main is in the chain)",
        "  - agents[2]: expected a mapping",
        "  - routing_rules[0] (name=r): priority: expected an integer, got float",
        "  - routing_rules[0] (name=r): agent: unknown agent: ghost "
        "(neither in the file nor in the database)",
    ]
    assert snapshot() == before


def test_an_active_rule_may_not_send_turns_to_an_inactive_agent(configured):
    Agent.objects.filter(slug="sales").update(is_active=False)
    rules = copy.deepcopy(CONFIGURED_EXPORT["routing_rules"])  # quotes → sales, inactive
    rules.append({"name": "prices", "pattern": "price", "agent": "sales", "active": False})

    assert config_validate(data={"routing_rules": rules}) == []

    rules[0]["active"] = True
    rules.append({"name": "discounts", "pattern": "discount", "agent": "sales"})

    assert config_validate(data={"routing_rules": rules}) == [
        "routing_rules[0] (name=quotes): agent: sales is inactive",
        "routing_rules[3] (name=discounts): agent: sales is inactive",
    ]


def test_changing_a_provider_kind_is_checked_against_agents_not_in_the_file(configured, tmp_path):
    Agent.objects.filter(slug="support").update(temperature=1.5)
    data = {"providers": [{**CONFIGURED_EXPORT["providers"][2], "kind": "anthropic"}]}
    data["providers"][0].pop("base_url")

    errors = config_validate(data=data)

    assert errors == [
        "providers[0] (name=openai-main): anthropic models take a temperature from 0.0 to 1.0, "
        "but agent support (not in the file) has temperature 1.5 and gpt-main in its chain"
    ]


def test_an_empty_file_is_valid_and_changes_nothing(configured, tmp_path):
    stdout, _ = run("apply", write(tmp_path, ""))

    assert stdout == "0 created, 0 changed, 0 deactivated, 0 unchanged\n"
