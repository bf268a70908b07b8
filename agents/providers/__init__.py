"""Model providers behind one streaming interface (see base.py)."""

from agents.providers.base import (
    Finish,
    ModelRequest,
    Provider,
    StreamEvent,
    TextDelta,
    Usage,
)
from agents.providers.local import LocalModel

__all__ = [
    "Finish",
    "LocalModel",
    "ModelRequest",
    "Provider",
    "StreamEvent",
    "TextDelta",
    "Usage",
]
