"""JSON from clients, refused at the door when it could not be stored or would exhaust us.

PostgreSQL stores no NUL character and no lone surrogate in text or JSON, and JSON has no
infinity (`1e400` parses to one); a document nested deeper than the parser's recursion
limit raises RecursionError. Each of these used to reach the database or the stack and
end as a 500; here it is a validation error that changes nothing.
"""

import math

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deeper than any body of the API needs (metadata included), shallow enough for every
# recursive walk over it (serializers, json.dumps, psycopg) to stay far from the limit.
MAX_DEPTH = 32
TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels."


class UnstorableJSON(ValueError):
    pass


def check_storable(value, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise UnstorableJSON naming the first problem: nesting deeper than `max_depth`, a
    string with NUL or a lone surrogate (keys too), a number that is not finite."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise UnstorableJSON("Numbers must be finite.")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise UnstorableJSON(f"JSON nested deeper than {max_depth} levels.")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise UnstorableJSON("Text must not contain the NUL character (\\u0000).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnstorableJSON("Text must not contain lone surrogates (\\ud800-\\udfff).") from None


class StorableJSONParser(JSONParser):
    """DRF's JSON parser, refusing what check_storable refuses (400 validation_error)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - {TOO_DEEP}") from None
        try:
            check_storable(data)
        except UnstorableJSON as error:
            raise ParseError(f"JSON parse error - {error}") from None
        return data
