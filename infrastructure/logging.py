"""Structured logging: structlog for our code, the same pipeline for stdlib loggers.

Every line carries the request id bound by the middleware (contextvars), and every line
passes through `redact_secrets` before it is rendered, so passwords, API keys and
Authorization headers never reach the log, whoever logged them.
"""

import re
from typing import Any

import structlog

REDACTED = "[redacted]"
# Whole name segments only: `api_key` and `password` are secrets, `input_tokens` is not.
SECRET_KEY_NAMES = re.compile(
    r"(?:^|[_-])(?:pass(?:word|wd)?|secret|token|api[_-]?key|authorization|cookie|"
    r"credentials?|session(?:id)?)$|^key$",
    re.IGNORECASE,
)
SECRET_VALUES = [
    # Our API keys, wherever they appear in a message.
    (re.compile(r"orc_[A-Za-z0-9_-]{16,}"), "orc_" + REDACTED),
    # Bearer / Basic credentials in a header dump or an exception text.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # password=..., "api_key": "...", token: ... in free text.
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|api[_-]?key|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&}]+"
        ),
        r"\1" + REDACTED,
    ),
]


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        for pattern, replacement in SECRET_VALUES:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_KEY_NAMES.search(str(key)) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item) for item in value)
    # Anything else (an exception, an object) is rendered as text later: redact that text.
    return _redact_value(repr(value))


def redact_secrets(_logger: Any, _method: str, event_dict: dict) -> dict:
    """structlog processor: drop secret-named fields and scrub secrets out of text."""
    return _redact_value(event_dict)


def _drop_request_object(_logger: Any, _method: str, event_dict: dict) -> dict:
    # django.request attaches the HttpRequest; its repr is noise and may carry headers.
    event_dict.pop("request", None)
    return event_dict


SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def build_logging_config(*, json_lines: bool, level: str) -> dict:
    """Configure structlog and return the stdlib LOGGING dict that renders through it."""
    structlog.configure(
        processors=[
            *SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    final_processors = [
        _drop_request_object,
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": final_processors,
                "foreign_pre_chain": [*SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
            }
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "structlog"},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"handlers": ["console"], "level": level, "propagate": False},
            # Access lines come from our middleware, with the request id.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "celery": {"handlers": ["console"], "level": level, "propagate": False},
        },
    }
