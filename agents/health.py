"""Recent health of each model (circuit state, last error, latency of the last call) and
whether each agent can answer.

A model's last call is kept in the cache (Redis in full stack, shared by all processes),
read by the admin, /ready/ and /status/. Each process writes a model's last call at most
once a second, and every failure and the first success after one at once.
"""

import threading
import time

from django.core.cache import cache
from django.utils import timezone

from agents import snapshot
from agents.breakers import circuit_state
from agents.models import Agent, LLMModel

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"
LAST_CALL = "orchestra:llm-health:{}:call"
LAST_ERROR = "orchestra:llm-health:{}:error"


CALL_RECORD_EVERY_S = 1.0
# model name -> (time.time(), failed) of this process's last write of the model's last call
_last_recorded: dict[str, tuple[float, bool]] = {}
_mutex = threading.Lock()


def record_call(model, *, latency_ms: int, error: str | None) -> None:
    with _mutex:
        written_at, failed = _last_recorded.get(model.name, (0.0, False))
        # Skipped only when a success follows a success within the second: a success
        # after a failure is always written, or the failure would pass for the last call.
        if not error and not failed and time.time() - written_at < CALL_RECORD_EVERY_S:
            return
        _last_recorded[model.name] = (time.time(), bool(error))
    now = timezone.now().isoformat()
    values = {LAST_CALL.format(model.name): {"latency_ms": latency_ms, "at": now}}
    if error:
        values[LAST_ERROR.format(model.name)] = {"error": error, "at": now}
    cache.set_many(values, timeout=None)


def model_health(model) -> dict:
    keys = LAST_CALL.format(model.name), LAST_ERROR.format(model.name)
    recent = cache.get_many(keys)
    last_call, last_error = recent.get(keys[0], {}), recent.get(keys[1], {})
    return {
        "circuit": circuit_state(model),
        "last_latency_ms": last_call.get("latency_ms"),
        "last_error": last_error.get("error"),
        "last_error_at": last_error.get("at"),
        "last_call_at": last_call.get("at"),
    }


def model_circuits() -> dict[str, str]:
    """Circuit state of every active model: closed, half-open or open. Informational: an
    open circuit is what fallbacks are for, so it does not make the service unready."""
    try:
        models = list(LLMModel.objects.filter(is_active=True).select_related("provider"))
        return {model.name: circuit_state(model) for model in models}
    except Exception:  # noqa: BLE001 - the dependency checks above say what is down
        return {}


def agents_status() -> list[dict]:
    """Each active agent and whether its model chain can answer: healthy (primary
    closed), degraded (answering from a fallback), failing (every circuit open)."""
    result = []
    agents = Agent.objects.filter(is_active=True).prefetch_related("chain_links__model__provider")
    for agent in agents:
        chain = snapshot.model_chain(agent)
        states = [(model.name, circuit_state(model)) for model in chain]
        usable = [name for name, state in states if state != "open"]
        if usable and usable[0] == states[0][0]:
            status = HEALTHY
        elif usable:
            status = DEGRADED
        else:
            status = FAILING
        result.append(
            {
                "agent": agent.slug,
                "status": status,
                "models": [{"model": name, "circuit": state} for name, state in states],
            }
        )
    return result
