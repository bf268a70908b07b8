"""Recent health of each model: circuit state, last error, latency of the last call.

Kept in the cache (Redis in full stack, shared by all processes), read by the admin,
/ready/ and /status/. Each process writes a model's last call at most once a second
(the latency shown is then that of a call in the last second), and every failure and the
first success after one at once.
"""

import threading
import time

from django.core.cache import cache
from django.utils import timezone

from agents.breakers import circuit_state

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
