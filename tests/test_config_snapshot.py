"""The per-process snapshot of routing rules and model chains (agents/snapshot.py).

Turns read the configuration from the snapshot; a committed change of a watched row sets a
new version in the shared cache, and the next turn of every process reloads.
"""

from datetime import UTC, datetime, timedelta

import time_machine
from django.core.cache import cache
from django.db import transaction

from agents import snapshot
from agents.models import Agent, LLMModel, RoutingRule
from conversations.execution import drain_conversation
from conversations.models import Turn
from infrastructure import cache_versions as versions
from tests.llm_helpers import chain_set, model_make, provider_make
from tests.turn_helpers import TRANSACTIONAL, agent_make, local_model_reply, submit

pytest_plugins = ["tests.turn_fixtures"]

TEXT = "I want a refund for order 7."


def run_turn(conversation, text: str = TEXT) -> Turn:
    turn = submit(conversation, text).turn
    drain_conversation(conversation.pk)
    turn.refresh_from_db()
    return turn


def test_a_committed_rule_routes_the_next_turn_and_its_deactivation_too(
    conversation, support_agent, django_capture_on_commit_callbacks
):
    refunds = agent_make("refunds", system_prompt="You are the refunds desk.")
    assert run_turn(conversation).intent == "conversation_agent"

    with django_capture_on_commit_callbacks(execute=True):
        rule = RoutingRule.objects.create(
            name="refund", priority=10, pattern="refund", agent=refunds
        )
    routed = run_turn(conversation)

    with django_capture_on_commit_callbacks(execute=True):
        rule.is_active = False
        rule.save()
    unrouted = run_turn(conversation)

    assert (routed.agent, routed.intent) == (refunds, "rule:refund")
    assert routed.output == local_model_reply(
        ("system", "You are the refunds desk."), ("user", TEXT)
    )
    assert (unrouted.agent, unrouted.intent) == (support_agent, "conversation_agent")


def test_a_committed_chain_change_is_the_next_chain(
    support_agent, django_capture_on_commit_callbacks
):
    local = LLMModel.objects.get(name="local")
    remote = model_make(provider_make(base_url="http://127.0.0.1:9/v1"), name="remote")
    assert snapshot.model_chain(support_agent) == [local]

    with django_capture_on_commit_callbacks(execute=True):
        chain_set(support_agent, remote, local)
    assert snapshot.model_chain(support_agent) == [remote, local]

    with django_capture_on_commit_callbacks(execute=True):
        remote.provider.is_active = False
        remote.provider.save()
    assert snapshot.model_chain(support_agent) == [local]


@time_machine.travel("2026-11-21 12:00:05Z", tick=False)  # inside one MAX_AGE_S window
def test_reading_an_unchanged_configuration_costs_no_query(
    support_agent, django_assert_num_queries
):
    local = LLMModel.objects.get(name="local")
    first = snapshot.current()

    with django_assert_num_queries(0):
        assert snapshot.current() is first
        assert snapshot.model_chain(support_agent) == [local]


def test_a_flushed_cache_starts_a_new_version_and_the_snapshot_reloads(support_agent):
    first = snapshot.current()

    cache.clear()
    versions.forget_reads()  # as READ_EVERY_S after it

    second = snapshot.current()
    assert second.version != first.version
    assert second is not first
    assert second.version.startswith(cache.get(snapshot.VERSION.key) + ":")


def test_without_a_cache_shared_between_processes_a_copy_lasts_a_second(
    support_agent, settings, django_assert_num_queries
):
    """The embedded mode: `manage.py orchestra_config apply` runs in a process of its own,
    whose new version the server's local-memory cache would never see."""
    settings.REDIS_URL = ""
    start = datetime(2026, 11, 21, 12, 0, 5, 100_000, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        first = snapshot.current()
        refunds = agent_make("refunds")  # a save in this process: seen at once
        assert snapshot.current() is not first
        second = snapshot.current()
        RoutingRule.objects.bulk_create(  # as another process would: no signal here
            [RoutingRule(name="refund", priority=10, pattern="refund", agent=refunds)]
        )
        with django_assert_num_queries(0):  # a turn reads it twice; it loads once
            assert snapshot.current() is second

    with time_machine.travel(start + timedelta(seconds=1), tick=False):
        third = snapshot.current()

    assert [rule.name for rule in third.rules] == ["refund"]


def test_a_version_set_by_another_process_is_read_within_a_tenth_of_a_second(support_agent):
    start = datetime(2026, 11, 21, 12, 0, 5, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        first = snapshot.current()
        cache.set(snapshot.VERSION.key, "set-by-another-process", timeout=None)
        assert snapshot.current() is first  # read a moment ago: not read again
    with time_machine.travel(start + timedelta(seconds=versions.READ_EVERY_S + 0.001), tick=False):
        assert snapshot.current().version.startswith("set-by-another-process:")
    with time_machine.travel(start - timedelta(seconds=60), tick=False):  # the clock stepped back
        cache.set(snapshot.VERSION.key, "after-the-step", timeout=None)
        assert snapshot.current().version.startswith("after-the-step:")


def test_a_copy_is_reloaded_after_max_age_even_without_a_new_version(support_agent):
    start = datetime(2026, 11, 21, 12, 0, 5, tzinfo=UTC)  # 5 s into a MAX_AGE_S window
    with time_machine.travel(start, tick=False):
        first = snapshot.current()
        RoutingRule.objects.bulk_create(  # sends no signal: as if the new version were lost
            [RoutingRule(name="refund", priority=10, pattern="refund", agent=support_agent)]
        )
        assert snapshot.current() is first

    with time_machine.travel(start + timedelta(seconds=versions.MAX_AGE_S), tick=False):
        reloaded = snapshot.current()

    assert [rule.name for rule in reloaded.rules] == ["refund"]


@TRANSACTIONAL
def test_a_change_sets_a_new_version_at_once_and_again_when_it_commits(support_agent):
    """A process that reloads between the two reads the old rows under the first new
    version; the second one makes it reload again."""
    before = cache.get(snapshot.VERSION.key)

    with transaction.atomic():
        RoutingRule.objects.create(
            name="refund", priority=10, pattern="refund", agent=support_agent
        )
        during = cache.get(snapshot.VERSION.key)
    after = cache.get(snapshot.VERSION.key)

    assert len({before, during, after}) == 3
    assert None not in (during, after)


def test_an_agent_newer_than_the_snapshot_is_read_from_the_database(support_agent):
    config = snapshot.current()
    [newer] = Agent.objects.bulk_create([Agent(slug="newer", name="Newer")])  # no signal

    assert newer.pk not in config.agents
    assert config.agent(newer.pk) == newer
    assert config.agent(support_agent.pk) is config.agents[support_agent.pk]
