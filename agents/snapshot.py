"""What every turn reads of the staff's configuration: routing rules and model chains.

Each process keeps one snapshot and reloads it when the configuration's version (one key in
the shared cache, infrastructure/cache_versions.py) changes: a save or delete of a provider,
model, agent, chain link or routing rule sets a new one. A turn then costs one cache read
instead of the queries for the rules and the chain.
"""

import threading
from dataclasses import dataclass

from agents.models import Agent, AgentModel, LLMModel, Provider, RoutingRule
from infrastructure.cache_versions import SharedVersion

VERSION = SharedVersion("orchestra:agents:config-version")
VERSION.watch(Provider, LLMModel, Agent, AgentModel, RoutingRule)


@dataclass(frozen=True)
class Snapshot:
    version: str
    rules: tuple[RoutingRule, ...]  # active, with an active agent, in the order they run
    chains: dict[int, tuple[LLMModel, ...]]  # agent id -> its active models, primary first
    local: tuple[LLMModel, ...]  # the chain of an agent that has no usable model
    agents: dict[int, Agent]  # every agent, active or not, by id

    def chain(self, agent: Agent) -> tuple[LLMModel, ...]:
        return self.chains.get(agent.pk) or self.local

    def agent(self, agent_id: int) -> Agent:
        """The agent; from the database if it is newer than the snapshot (its new version
        did not reach the cache)."""
        return self.agents.get(agent_id) or Agent.objects.get(pk=agent_id)

    def default_agent(self) -> Agent | None:
        return next((a for a in self.agents.values() if a.is_default and a.is_active), None)


_current: Snapshot | None = None
_reload = threading.Lock()


def current() -> Snapshot:
    """The snapshot of the configuration as of its latest version."""
    global _current
    version = VERSION.current()
    snapshot = _current
    if snapshot is not None and snapshot.version == version:
        return snapshot
    with _reload:
        if _current is None or _current.version != version:
            _current = _load(version)
        return _current


def _load(version: str) -> Snapshot:
    rules = RoutingRule.objects.filter(is_active=True, agent__is_active=True).select_related(
        "agent"
    )
    chains: dict[int, list[LLMModel]] = {}
    links = AgentModel.objects.select_related("model__provider").order_by("agent_id", "position")
    for link in links.filter(model__is_active=True, model__provider__is_active=True):
        chains.setdefault(link.agent_id, []).append(link.model)
    local = LLMModel.objects.filter(name="local").select_related("provider")
    return Snapshot(
        version=version,
        rules=tuple(rules.order_by("priority", "name")),
        chains={agent_id: tuple(models) for agent_id, models in chains.items()},
        local=tuple(local),
        agents=Agent.objects.in_bulk(),
    )


def model_chain(agent: Agent) -> list[LLMModel]:
    """The agent's active models, primary first; the local model if it has none."""
    return list(current().chain(agent))
