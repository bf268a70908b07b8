"""The HTTP Prefer header (RFC 7240), of which Orchestra reads one preference: `wait`.

`Prefer: wait=30` on a turn's submission asks for the answer in the same response: the
server waits up to that many seconds for the turn to end. As RFC 7240 asks, preferences
Orchestra does not know (`respond-async`, `return=minimal` …) are ignored, and only the
first `wait` counts. Unlike the RFC's advice to ignore what cannot be honoured, a `wait`
that is not whole seconds is refused: a client that asked to wait and got an answer at
once would not know why.
"""

import re

# The longest a request waits, whatever the client prefers (as `?wait=` on a turn).
MAX_WAIT_S = 60

# A preference: a token, maybe `= value`, maybe `; parameters`, up to the next comma that
# is not inside a quoted string.
_PREFERENCE = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_NAME_AND_VALUE = re.compile(r'\s*([^\s=;]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?')


def preferred_wait(header: str | None) -> int:
    """Seconds the client will wait (`wait=N`, at most MAX_WAIT_S); 0 when it asks for no
    wait. Raises ValueError for a `wait` that is not a whole number of seconds."""
    for preference in _PREFERENCE.findall(header or ""):
        match = _NAME_AND_VALUE.match(preference)
        if not match or match[1].lower() != "wait":
            continue
        value = (match[2] or "").strip()
        if value.startswith('"'):
            value = value[1:-1]
        if not value.isascii() or not value.isdigit():
            raise ValueError(f"wait must be a whole number of seconds, not {value!r}.")
        return min(int(value), MAX_WAIT_S)
    return 0
