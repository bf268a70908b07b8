from prometheus_client import Counter, Gauge, Histogram

TURNS = Counter("orchestra_turns_total", "Turns that ended, by status.", ["status", "agent"])
TURN_LATENCY = Histogram(
    "orchestra_turn_latency_seconds",
    "From submission to the end of the turn.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TURN_TTFT = Histogram(
    "orchestra_turn_ttft_seconds",
    "From submission to the first streamed text.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TURNS_IN_PROGRESS = Gauge(
    "orchestra_turns_in_progress",
    "Turns being executed by this process.",
    multiprocess_mode="livesum",
)
ECHO = Counter("orchestra_echo_total", "Replies that repeated a recent one, by action.", ["action"])
LOCK_WAIT = Histogram(
    "orchestra_lock_wait_seconds",
    "Time to take a conversation's execution lock.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)
