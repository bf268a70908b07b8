"""The HTTP Prefer header (RFC 7240), of which Orchestra reads one preference: `wait`.

`Prefer: wait=30` on a turn's submission asks for the answer in the same response: the
server waits up to that many seconds for the turn to end. As RFC 7240 asks, preferences
Orchestra does not know (`respond-async`, `return=minimal` …) are ignored, and only the
first `wait` counts.
"""

# The longest a request waits, whatever the client prefers (as `?wait=` on a turn).
MAX_WAIT_S = 60


def preferred_wait(header: str | None) -> int:
    """Seconds the client will wait (`wait=N`, at most MAX_WAIT_S); 0 when it asks for no
    wait. Raises ValueError for a `wait` that is not a whole number of seconds."""
    for preference in (header or "").split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not value.isascii() or not value.isdigit():
            raise ValueError(f"wait must be a whole number of seconds, not {value!r}.")
        return min(int(value), MAX_WAIT_S)
    return 0
