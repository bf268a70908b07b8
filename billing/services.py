from billing.models import UsageRecord
from infrastructure import raw_rows as rows


def usage_record_create(
    *,
    turn_id: int,
    agent_id: int,
    provider_id: int,
    model_id: int,
    attempt: int,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    tokens_estimated: bool,
    latency_ms: int,
    ttft_ms: int | None,
    outcome: str,
    error_class: str = "",
) -> UsageRecord:
    """One per model call, written at once (not with the turn) so that no call goes
    unbilled if the worker dies mid-turn; without the query compiler (infrastructure/raw_rows.py),
    because every model call pays for it."""
    record = UsageRecord(
        turn_id=turn_id,
        agent_id=agent_id,
        provider_id=provider_id,
        model_id=model_id,
        attempt=attempt,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        tokens_estimated=tokens_estimated,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        outcome=outcome,
        error_class=error_class,
    )
    return rows.insert(record)
