"""Orchestra's built-in local model: deterministic, no network, honest about what it is.

Its reply is a function of the agent's system prompt and the customer's message, so the
same question gets the same answer (which anti-echo then catches). It streams word by
word with a configurable delay and reports its own token counts (one token per word).
"""

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator

from django.conf import settings

from agents.providers.base import (
    Finish,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
)

CAPABILITIES = [
    "I answer from Orchestra's configuration, and I can show how a conversation flows "
    "through the turn engine.",
    "I keep every turn in order and answer each one exactly once, even when a message is "
    "sent twice.",
    "Staff can configure a real language model for this agent in the back-office; until "
    "then I reply.",
    "I can't reason about free text like a language model does, so my answers are simple "
    "and predictable.",
]
FOLLOW_UPS = [
    "Ask me something else, or ask a member of staff to take over.",
    "If you need a person, say so and staff can join the conversation.",
    "Your message is stored with this conversation so staff can read it.",
    "Each reply you see was streamed word by word, the way a language model streams.",
]
REPHRASED = [
    "You asked this before, and my answer has not changed.",
    "That is the same question as earlier; here it is in other words.",
]


def _pick(options: list[str], seed: bytes, salt: str) -> str:
    index = int.from_bytes(hashlib.sha256(seed + salt.encode()).digest()[:4], "big")
    return options[index % len(options)]


def _quote(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def compose_reply(request: ModelRequest) -> str:
    question = request.last_user_text
    # Case and spacing do not make a different question.
    normalized = " ".join(question.casefold().split())
    seed = hashlib.sha256(f"{request.system_text}\n{normalized}".encode()).digest()
    if request.asks_not_to_repeat:
        return (
            f"{_pick(REPHRASED, seed, 'r')} In short: I am the built-in local model, not a "
            f"large language model, so I cannot give a new answer to “{_quote(question, 80)}”. "
            f"{_pick(FOLLOW_UPS, seed, 'f2')}"
        )
    return (
        "I'm Orchestra's built-in local model, a deterministic stand-in that runs without "
        f"network access — not a large language model. You wrote: “{_quote(question)}”. "
        f"{_pick(CAPABILITIES, seed, 'c')} {_pick(FOLLOW_UPS, seed, 'f')}"
    )


# Requests the local model recognizes: (tool, pattern, arguments from the match). It calls
# the tool only when the agent offers it. Tried in order; the first match wins.
ToolIntent = tuple[str, re.Pattern, Callable[[re.Match, str], dict]]
TOOL_INTENTS: list[ToolIntent] = [
    (
        "transfer_to_agent",
        re.compile(r"\b(?:transfer|switch|pass) me to (?:the )?([a-z0-9_-]+)", re.I),
        lambda m, text: {"agent": m.group(1).lower(), "reason": "The customer asked for it."},
    ),
    (
        "escalate",
        re.compile(
            r"\b(complain(?:s|ed|ing|t|ts)?|lawyers?|legal action|sue|suing"
            r"|fraud(?:ulent)?|scam(?:s|med)?)\b",
            re.I,
        ),
        lambda m, text: {"reason": f"The customer mentioned “{m.group(0)}”."},
    ),
    (
        "handoff_to_human",
        re.compile(r"\b(human|real person|a person|someone real|staff member|operator)\b", re.I),
        lambda m, text: {"reason": "The customer asked for a person."},
    ),
    (
        "resolve_conversation",
        re.compile(
            r"\b(that'?s all|that is all|problem solved|all sorted|no more questions)\b", re.I
        ),
        lambda m, text: {"reason": "The customer said they need nothing more."},
    ),
]
# How the local model words a tool's result: tool name -> formatter(result) -> text.
TOOL_ANSWERS: dict[str, Callable[[dict], str]] = {}


def _choose_tool(request: ModelRequest) -> ToolCall | None:
    offered = {tool.name for tool in request.tools}
    text = request.last_user_text
    for name, pattern, arguments in TOOL_INTENTS:
        if name in offered and (match := pattern.search(text)):
            return ToolCall(
                id=f"local-{name}", name=name, arguments=arguments(match, text), raw_arguments=""
            )
    return None


def _answer_tool_result(message: dict) -> str:
    """Words for the result of the tool the local model called."""
    try:
        result = json.loads(message["content"])
    except (TypeError, ValueError):
        result = {"result": message.get("content")}
    if isinstance(result, dict) and "error" in result:
        return f"I tried to look that up but the {message.get('name')} tool said: {result['error']}"
    formatter = TOOL_ANSWERS.get(message.get("name", ""))
    if formatter is not None and isinstance(result, dict):
        return formatter(result)
    facts = (
        ", ".join(f"{k}: {v}" for k, v in result.items()) if isinstance(result, dict) else result
    )
    return f"Here is what I found — {facts}."


def count_tokens(text: str) -> int:
    return len(text.split())


class LocalModel:
    """The `local` provider."""

    def __init__(self, token_delay_s: float | None = None):
        # None: follow LOCAL_MODEL_TOKEN_DELAY_MS, read at each call.
        self.token_delay_s = token_delay_s

    def _delay(self) -> float:
        if self.token_delay_s is not None:
            return self.token_delay_s
        return settings.LOCAL_MODEL_TOKEN_DELAY_MS / 1000

    def stream(self, request: ModelRequest) -> Iterator[StreamEvent]:
        prompt_tokens = sum(count_tokens(str(m.get("content", ""))) for m in request.messages)
        last = request.messages[-1] if request.messages else {}
        if last.get("role") == "tool":
            reply = _answer_tool_result(last)
        elif request.tools and (call := _choose_tool(request)):
            yield call
            yield Usage(
                input_tokens=prompt_tokens, output_tokens=len(json.dumps(call.arguments).split())
            )
            yield Finish("tool_calls")
            return
        else:
            reply = compose_reply(request)
        words = reply.split(" ")
        delay = self._delay()
        for index, word in enumerate(words):
            if delay:
                time.sleep(delay)
            yield TextDelta(word if index == 0 else " " + word)
        yield Usage(input_tokens=prompt_tokens, output_tokens=len(words))
        yield Finish("stop")
