"""Helpers of the LLM router, runtime, admin and mood tests: providers and models pointing
at the fake servers (tests/fakes), model chains, metrics and circuit-breaker state.

Model names are unique per call (`unique`), so a model's circuit breaker (in Redis under
`orchestra:breaker:<model name>`, and cached per process by name in agents.breakers) and
its Prometheus series start fresh in every test.
"""

import json
import uuid

from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY

from agents import router
from agents.models import Agent, AgentModel, LLMModel, Provider
from agents.providers.base import ModelRequest
from agents.providers.factory import shared_provider
from agents.runtime import AgentOutcome, run_agent
from billing.models import UsageRecord
from conversations.models import Turn
from infrastructure.event_loops import run_sync
from infrastructure.off_loop import INLINE
from infrastructure.redis_client import sync_client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- fixtures' building blocks (each test module declares its own fixtures) ---------------------


# --- configuration rows ------------------------------------------------------------------------


def provider_make(server=None, *, kind: str = "openai", name: str | None = None, **fields):
    """A provider row for a fake server: small timeouts, no retries, breaker wide open."""
    fields.setdefault("connect_timeout_s", 1.0)
    fields.setdefault("read_timeout_s", 3.0)
    fields.setdefault("max_retries", 0)
    fields.setdefault("breaker_fail_max", 5)
    fields.setdefault("breaker_reset_s", 30)
    if server is not None:
        fields.setdefault("base_url", server.base_url)
    return Provider.objects.create(name=name or unique(f"fake-{kind}"), kind=kind, **fields)


def model_make(provider: Provider, name: str | None = None, **fields) -> LLMModel:
    fields.setdefault("context_window", 8192)
    fields.setdefault("max_output_tokens", 512)
    return LLMModel.objects.create(provider=provider, name=name or unique("model"), **fields)


def fake_model(server, *, kind: str = "openai", name: str | None = None, **provider_fields):
    """A model served by `server`, on a provider of its own."""
    return model_make(provider_make(server, kind=kind, **provider_fields), name=name)


def local_model() -> LLMModel:
    return LLMModel.objects.select_related("provider").get(name="local")


def chain_set(agent: Agent, *models: LLMModel) -> None:
    AgentModel.objects.filter(agent=agent).delete()
    for position, model in enumerate(models):
        AgentModel.objects.create(agent=agent, model=model, position=position)


def request_for(text: str = "Where is my parcel?"):
    """A `request_for` for router.complete: the same small request for every model."""

    def build(model: LLMModel) -> ModelRequest:
        return ModelRequest(
            model=model.name,
            messages=[
                {"role": "system", "content": "You are a shop assistant."},
                {"role": "user", "content": text},
            ],
            max_output_tokens=64,
        )

    return build


async def _collect(provider, request: ModelRequest) -> list:
    return [event async for event in provider.stream(request)]


async def _collect_until_error(provider, request: ModelRequest) -> tuple[list, Exception]:
    events = []
    try:
        async for event in provider.stream(request):
            events.append(event)
    except Exception as error:  # noqa: BLE001 - the caller asserts what it was
        return events, error
    raise AssertionError(f"The stream ended without an error, after {events}.")


def events_until_error(provider, request: ModelRequest) -> tuple[list, Exception]:
    """The events the stream gave before it failed, and the error."""
    return run_sync(_collect_until_error, provider, request)


def close(provider) -> None:
    run_sync(provider.aclose)


def events_of(provider, request: ModelRequest) -> list:
    """Every event of the provider's stream for `request` (on the process's background
    loop: an adapter's async client keeps its connections on one loop)."""
    return run_sync(_collect, provider, request)


def complete(**kwargs) -> router.ModelResponse:
    """router.complete, from a test, on the background loop."""
    return run_sync(router.complete, **kwargs)


async def _shared(config):
    return shared_provider(config)


def warm_up(model: LLMModel) -> None:
    """The model's adapter built (its SDK imported, its client made) on the background loop."""
    run_sync(_shared, model.provider.config())


def run_agent_here(**kwargs) -> AgentOutcome:
    """runtime.run_agent from a test: on a loop of its own, its tools' database work on the
    test's thread (its connection and transaction)."""

    async def run() -> AgentOutcome:
        token = INLINE.set(True)
        try:
            return await run_agent(**kwargs)
        finally:
            INLINE.reset(token)

    return async_to_sync(run)()


class RouterSpy:
    """RouterCallbacks that record what the router reported."""

    def __init__(self):
        self.deltas: list[str] = []
        self.resets = 0
        self.calls: list[router.ModelCall] = []
        self.waits: list[float] = []

    def callbacks(self) -> router.RouterCallbacks:
        return router.RouterCallbacks(
            on_delta=self._delta, on_reset=self._reset, on_model_call=self._call
        )

    async def _delta(self, text: str) -> None:
        self.deltas.append(text)

    async def _reset(self) -> None:
        self.resets += 1

    async def _call(self, call: router.ModelCall) -> None:
        self.calls.append(call)

    async def sleep(self, seconds: float) -> None:
        """A `sleep` for router.complete that records the wait instead of sleeping."""
        self.waits.append(seconds)

    def summary(self) -> list[tuple[str, int, str, str]]:
        return [(c.model.name, c.attempt, c.outcome, c.error_class) for c in self.calls]


# --- observing ---------------------------------------------------------------------------------


def usage_of(turn: Turn) -> list[tuple[str, int, str, str]]:
    """(model, attempt, outcome, error class) of the turn's usage records, in call order."""
    return [
        (r.model.name, r.attempt, r.outcome, r.error_class)
        for r in UsageRecord.objects.filter(turn=turn).select_related("model").order_by("pk")
    ]


def usage_records(turn: Turn) -> list[UsageRecord]:
    return list(
        UsageRecord.objects.filter(turn=turn).select_related("model", "provider").order_by("pk")
    )


def metric(name: str, **labels: str) -> float:
    """A sample's current value from the default Prometheus registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def breaker_state_in_redis(model: LLMModel) -> str | None:
    value = sync_client().get(f"orchestra:breaker:{model.name}:pybreaker:state")
    return value.decode() if value is not None else None


def tool_results(server, index: int) -> list[dict]:
    """The tool results sent back in request `index`, provider-neutral:
    [{"id", "content"}] (OpenAI `tool` messages, Anthropic `tool_result` blocks)."""
    body = server.requests[index].json
    results = []
    for message in body["messages"]:
        if message["role"] == "tool":
            results.append({"id": message["tool_call_id"], "content": message["content"]})
        elif isinstance(message.get("content"), list):
            for block in message["content"]:
                if block.get("type") == "tool_result":
                    content = block["content"]
                    if isinstance(content, list):
                        content = "".join(part.get("text", "") for part in content)
                    results.append({"id": block["tool_use_id"], "content": content})
    return results


def tool_calls_sent_back(server, index: int) -> list[dict]:
    """The assistant's tool calls as echoed back in request `index`: [{"id", "name",
    "arguments": dict}]."""
    body = server.requests[index].json
    calls = []
    for message in body["messages"]:
        if message["role"] != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            calls.append(
                {
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": json.loads(call["function"]["arguments"]),
                }
            )
        if isinstance(message.get("content"), list):
            for block in message["content"]:
                if block.get("type") == "tool_use":
                    calls.append(
                        {"id": block["id"], "name": block["name"], "arguments": block["input"]}
                    )
    return calls
