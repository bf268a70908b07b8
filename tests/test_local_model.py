"""The built-in local model: deterministic, honest about what it is, streams word by word."""

from agents.providers import Finish, LocalModel, ModelRequest, TextDelta, Usage
from agents.providers.base import NO_REPEAT_INSTRUCTION
from tests.llm_helpers import events_of

SYSTEM = "You are the support agent of a small shop."
QUESTION = "Where is my parcel? It was due on Monday."


def request_for(*messages: tuple[str, str]) -> ModelRequest:
    return ModelRequest(
        model="local", messages=[{"role": role, "content": content} for role, content in messages]
    )


def stream(request: ModelRequest) -> list:
    return events_of(LocalModel(token_delay_s=0), request)


def text_of(events: list) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def test_the_same_request_gets_the_same_reply():
    request = request_for(("system", SYSTEM), ("user", QUESTION))

    first, second = stream(request), stream(request)

    assert first == second
    assert text_of(first) != ""


def test_case_and_spacing_do_not_make_a_different_question():
    plain = text_of(stream(request_for(("system", SYSTEM), ("user", "where is my parcel"))))
    shouted = text_of(stream(request_for(("system", SYSTEM), ("user", "  WHERE is  my PARCEL "))))

    # the quoted question keeps the customer's spelling; everything around it is the same
    assert plain.replace("“where is my parcel”", "") == shouted.replace("“WHERE is my PARCEL”", "")


def test_it_says_it_is_orchestras_built_in_local_model_and_quotes_the_question():
    text = text_of(stream(request_for(("system", SYSTEM), ("user", QUESTION))))

    assert text.startswith(
        "I'm Orchestra's built-in local model, a deterministic stand-in that runs without "
        "network access — not a large language model. You wrote: "
        "“Where is my parcel? It was due on Monday.”. "
    )


def test_it_streams_one_delta_per_word_then_usage_then_finish():
    events = stream(request_for(("system", SYSTEM), ("user", QUESTION)))
    text = text_of(events)
    deltas = [event for event in events if isinstance(event, TextDelta)]

    assert len(deltas) == len(text.split())
    assert deltas[0].text == "I'm"
    assert all(delta.text.startswith(" ") and " " not in delta.text[1:] for delta in deltas[1:])
    assert events[-2:] == [
        Usage(
            input_tokens=len(SYSTEM.split()) + len(QUESTION.split()),
            output_tokens=len(text.split()),
        ),
        Finish("stop"),
    ]


def test_usage_counts_every_message_of_the_prompt():
    events = stream(
        request_for(
            ("system", "Be brief."),
            ("user", "one two three"),
            ("assistant", "four five"),
            ("user", "six"),
        )
    )

    [usage] = [event for event in events if isinstance(event, Usage)]
    assert usage.input_tokens == 2 + 3 + 2 + 1
    assert usage.output_tokens == len(text_of(events).split())


def test_asked_not_to_repeat_itself_it_gives_another_honest_reply():
    plain = text_of(stream(request_for(("system", SYSTEM), ("user", QUESTION))))
    again = text_of(
        stream(
            request_for(("system", SYSTEM), ("user", QUESTION), ("system", NO_REPEAT_INSTRUCTION))
        )
    )

    assert again != plain
    assert "I am the built-in local model, not a large language model" in again


def test_a_token_delay_paces_the_stream(settings):
    settings.LOCAL_MODEL_TOKEN_DELAY_MS = 7

    assert LocalModel()._delay() == 0.007
    assert LocalModel(token_delay_s=0)._delay() == 0
