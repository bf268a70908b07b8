"""The agent runtime: a library that runs one agent turn and reports through callbacks.

It knows nothing about conversations or persistence: it takes the agent, the history and
the new input, runs the tool-calling loop through the router, streams text through the
callbacks, and returns the outcome (final text, steps, sink or transfer). The caller
applies the outcome. It runs on an event loop; tools, which read the database, run off it.
"""

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from agents import router, snapshot
from agents.models import Agent, LLMModel
from agents.providers.base import NO_REPEAT_INSTRUCTION, ModelRequest, ToolCall
from agents.tools import ToolContext, ToolError, get_tool
from infrastructure.off_loop import off_loop

log = structlog.get_logger("orchestra.runtime")

# Rough tokens per character, for fitting history into a context window.
CHARS_PER_TOKEN = 4
SINK_MESSAGES = {
    "resolved": "Glad I could help. I've marked this conversation as resolved.",
    "handed_off": "I'm passing you to a member of our team, who will answer here shortly.",
    "escalated": "I've escalated this to a supervisor, who will get back to you here.",
    "transfer": "I'm passing you to a colleague who can help better with this.",
}


class StepLimitExceeded(Exception):
    """The agent used all its model calls without giving an answer."""


@dataclass
class Step:
    kind: str  # model_call | tool_call
    name: str
    arguments: dict | None = None
    result: dict | None = None
    error: str = ""
    duration_ms: int = 0


@dataclass
class AgentOutcome:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    model_ms: int = 0
    steps: list[Step] = field(default_factory=list)
    sink: str | None = None  # resolved | handed_off | escalated | transfer
    transfer_to: str | None = None  # agent slug, with sink "transfer"


@dataclass
class RuntimeCallbacks:
    on_delta: Callable[[str], Awaitable[None]]
    on_reset: Callable[[], Awaitable[None]] = router.do_nothing
    on_tool: Callable[[str, str, str], Awaitable[None]] = router.do_nothing
    on_model_call: Callable[[router.ModelCall], Awaitable[None]] = router.do_nothing
    on_step: Callable[["Step"], None] = lambda step: None
    should_stop: Callable[[], bool] = lambda: False


def _tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def fit_messages(
    *, model: LLMModel, agent: Agent, system: list[dict], history: list[dict], tail: list[dict]
) -> list[dict]:
    """system + as much recent history as fits + tail (the new input and this turn's tool
    exchanges). Oldest history goes first; raises ContextOverflow if the tail alone
    does not fit."""
    budget = model.context_window - min(agent.max_output_tokens, model.max_output_tokens)
    fixed = sum(_tokens(str(m.get("content", ""))) for m in system + tail)
    if fixed > budget:
        raise router.ContextOverflow()
    kept: list[dict] = []
    used = fixed
    # History comes in (user, assistant) pairs; keep whole pairs, newest first.
    for index in range(len(history) - 2, -1, -2):
        pair = history[index : index + 2]
        cost = sum(_tokens(m["content"]) for m in pair)
        if used + cost > budget:
            break
        kept[:0] = pair
        used += cost
    return system + kept + tail


async def run_agent(
    *,
    agent: Agent,
    history: list[tuple[str, str]],
    text: str,
    callbacks: RuntimeCallbacks,
    conversation_id: str | None = None,
    avoid_repeating: bool = False,
    chain: Sequence[LLMModel] | None = None,
) -> AgentOutcome:
    """Run `agent` on `text` after `history` [(user text, reply)], along `chain` (by
    default the agent's model chain now)."""
    chain = await off_loop(snapshot.model_chain, agent) if chain is None else list(chain)
    tools = [tool for name in agent.tools if (tool := get_tool(name)) is not None]
    system = [{"role": "system", "content": agent.system_prompt}] if agent.system_prompt else []
    past = [
        message
        for user_text, reply in history
        for message in (
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": reply},
        )
    ]
    tail: list[dict] = [{"role": "user", "content": text}]
    if avoid_repeating:
        tail.append({"role": "system", "content": NO_REPEAT_INSTRUCTION})

    def request_for(model: LLMModel) -> ModelRequest:
        return ModelRequest(
            model=model.name,
            messages=fit_messages(model=model, agent=agent, system=system, history=past, tail=tail),
            max_output_tokens=min(agent.max_output_tokens, model.max_output_tokens),
            temperature=agent.temperature,
            tools=tuple(t.spec for t in tools) if model.supports_tools else (),
        )

    outcome = AgentOutcome(text="")
    texts: list[str] = []

    def record(step: Step) -> None:
        outcome.steps.append(step)
        callbacks.on_step(step)

    async def on_model_call(call: router.ModelCall) -> None:
        outcome.input_tokens += call.input_tokens
        outcome.output_tokens += call.output_tokens
        outcome.model_ms += call.latency_ms
        await callbacks.on_model_call(call)

    async def on_reset() -> None:
        # A reset takes back everything streamed so far, earlier steps' text included:
        # stream that again so what clients show is what the output will be.
        await callbacks.on_reset()
        if earlier := "".join(texts):
            await callbacks.on_delta(earlier)

    router_callbacks = router.RouterCallbacks(
        on_delta=callbacks.on_delta,
        on_reset=on_reset,
        on_model_call=on_model_call,
        should_stop=callbacks.should_stop,
    )
    context = ToolContext(agent_slug=agent.slug, conversation_id=conversation_id)
    for _ in range(agent.max_tool_steps):
        response = await router.complete(
            chain=chain, request_for=request_for, callbacks=router_callbacks
        )
        record(
            Step(
                kind="model_call",
                name=response.model.name,
                result={
                    "text": response.text,
                    "tool_calls": [c.name for c in response.tool_calls],
                    "finish_reason": response.finish_reason,
                },
                duration_ms=response.latency_ms,
            )
        )
        texts.append(response.text)
        if not response.tool_calls:
            outcome.text = "".join(texts)
            return outcome
        tail.append(
            {
                "role": "assistant",
                "content": response.text,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments or {}}
                    for c in response.tool_calls
                ],
            }
        )
        for call in response.tool_calls:
            step, sink = await _run_tool(call, agent, context, callbacks)
            record(step)
            tail.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "name": call.name,
                    "content": json.dumps(step.result if not step.error else {"error": step.error}),
                }
            )
            if sink is not None:
                closing = "" if "".join(texts).strip() else SINK_MESSAGES[sink]
                if closing:
                    await callbacks.on_delta(closing)
                    texts.append(closing)
                outcome.text = "".join(texts)
                outcome.sink = sink
                outcome.transfer_to = (step.result or {}).get("transferred_to")
                return outcome
    raise StepLimitExceeded(f"No answer after {agent.max_tool_steps} model calls.")


async def _run_tool(
    call: ToolCall, agent: Agent, context: ToolContext, callbacks: RuntimeCallbacks
):
    """Run one tool call. Errors go back to the model as the tool's result, never up."""
    started = time.monotonic()
    tool = get_tool(call.name) if call.name in agent.tools else None
    step = Step(kind="tool_call", name=call.name, arguments=call.arguments)
    sink = None
    await callbacks.on_tool(call.name, "started", "")
    if tool is None:
        step.error = f"Unknown tool {call.name!r}: use one of {', '.join(agent.tools) or 'none'}."
    elif call.arguments is None:
        step.error = "The arguments are not a JSON object: " + call.raw_arguments[:200]
        step.arguments = {"raw": call.raw_arguments[:2000]}
    else:
        try:
            step.result = await off_loop(tool.run, context, call.arguments)
            sink = tool.sink
        except ToolError as error:
            step.error = str(error)
        except Exception as error:
            log.exception("runtime.tool_crashed", tool=call.name)
            step.error = f"The tool failed ({type(error).__name__})."
    step.duration_ms = int((time.monotonic() - started) * 1000)
    if step.error:
        log.warning("runtime.tool_error", tool=call.name, error=step.error)
        await callbacks.on_tool(call.name, "error", step.error[:200])
    else:
        await callbacks.on_tool(call.name, "ok", _summary(step.result))
    return step, sink


def _summary(result: dict | None) -> str:
    return json.dumps(result, default=str)[:200] if result else ""
