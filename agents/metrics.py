from prometheus_client import Counter, Gauge, Histogram

LLM_REQUESTS = Counter(
    "orchestra_llm_requests_total", "Model call attempts by outcome.", ["model", "outcome"]
)
LLM_LATENCY = Histogram(
    "orchestra_llm_latency_seconds",
    "Duration of a model call attempt.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TOKENS = Counter("orchestra_tokens_total", "Tokens by direction.", ["model", "direction"])
FALLBACKS = Counter(
    "orchestra_fallbacks_total", "Moves to the next model of a chain.", ["from_model", "to_model"]
)
CIRCUIT_STATE = Gauge(
    "orchestra_circuit_breaker_state",
    "Circuit breaker per model: 0 closed, 1 half-open, 2 open.",
    ["model"],
    multiprocess_mode="mostrecent",
)
STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}
