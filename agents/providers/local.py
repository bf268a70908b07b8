"""Orchestra's built-in local model: deterministic, no network, honest about what it is.

Its reply is a function of the agent's system prompt and the customer's message, so the
same question gets the same answer (which anti-echo then catches). It streams word by
word with a configurable delay and reports its own token counts (one token per word).
"""

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Skill:
    """A request the local model recognizes, for one tool: `recognize` reads the
    customer's message and returns the tool's arguments, or None when the message is not
    such a request; `answer`, if given, words the tool's result."""

    tool: str
    recognize: Callable[[str], dict | None]
    answer: Callable[[dict], str] | None = None


def _on_match(pattern: re.Pattern, arguments: Callable[[re.Match], dict]):
    def recognize(text: str) -> dict | None:
        match = pattern.search(text)
        return arguments(match) if match else None

    return recognize


# Tried in order, the first match wins; the tool is called only when the agent offers it.
_SKILLS: list[Skill] = [
    Skill(
        "transfer_to_agent",
        _on_match(
            re.compile(r"\b(?:transfer|switch|pass) me to (?:the )?([a-z0-9_-]+)", re.I),
            lambda m: {"agent": m.group(1).lower(), "reason": "The customer asked for it."},
        ),
    ),
    Skill(
        "escalate",
        _on_match(
            re.compile(
                r"\b(complain(?:s|ed|ing|t|ts)?|lawyers?|legal action|sue|suing"
                r"|fraud(?:ulent)?|scam(?:s|med)?)\b",
                re.I,
            ),
            lambda m: {"reason": f"The customer mentioned “{m.group(0)}”."},
        ),
    ),
    Skill(
        "handoff_to_human",
        _on_match(
            re.compile(
                r"\b(human|real person|a person|someone real|staff member|operator)\b", re.I
            ),
            lambda m: {"reason": "The customer asked for a person."},
        ),
    ),
    Skill(
        "resolve_conversation",
        _on_match(
            re.compile(
                r"\b(that'?s all|that is all|problem solved|all sorted|no more questions)\b", re.I
            ),
            lambda m: {"reason": "The customer said they need nothing more."},
        ),
    ),
]


def teach(skill: Skill) -> None:
    """Teach the local model to recognize requests for another tool (tried after the ones
    it knows)."""
    if any(known.tool == skill.tool for known in _SKILLS):
        raise ValueError(f"The local model already knows the tool {skill.tool!r}.")
    _SKILLS.append(skill)


def _choose_tool(request: ModelRequest) -> ToolCall | None:
    offered = {tool.name for tool in request.tools}
    text = request.last_user_text
    for skill in _SKILLS:
        if skill.tool in offered and (arguments := skill.recognize(text)) is not None:
            return ToolCall(
                id=f"local-{skill.tool}", name=skill.tool, arguments=arguments, raw_arguments=""
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
    skill = next((skill for skill in _SKILLS if skill.tool == message.get("name")), None)
    if skill is not None and skill.answer is not None and isinstance(result, dict):
        return skill.answer(result)
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

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
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
                await asyncio.sleep(delay)
            yield TextDelta(word if index == 0 else " " + word)
        yield Usage(input_tokens=prompt_tokens, output_tokens=len(words))
        yield Finish("stop")
