"""Parsing `POST /v1/responses`: what is honoured, and a named 400 for everything else."""

from __future__ import annotations

from typing import Any

import pytest

from openai_api.errors import ConversationNotFound, InvalidParam, UnsupportedParam
from openai_api.responses.request import parse_response_request

CONV = "conv_" + "0123456789abcdef" * 2
SESSION = "01234567-89ab-cdef-0123-456789abcdef"


def parse(**body: Any) -> Any:
    return parse_response_request({"model": "echo", "input": "hi", **body})


def test_a_string_input_is_one_user_message_with_the_echoed_parameters() -> None:
    request = parse(instructions="Be brief.", max_output_tokens=5.0, temperature=0.5, stop="x", metadata={"a": "b"})

    assert request.stored_content() == "hi" and request.turn_instructions == "Be brief."
    assert (request.params.max_tokens, request.params.temperature, request.params.stop) == (5, 0.5, ("x",))
    assert (request.metadata, request.store, request.stream) == ({"a": "b"}, True, False)


def test_conversation_is_an_id_or_an_object_with_one() -> None:
    assert parse(conversation=CONV).session_id == SESSION
    assert parse(conversation={"id": CONV}).session_id == SESSION
    with pytest.raises(ConversationNotFound):
        parse(conversation="conv_nothing")
    with pytest.raises(InvalidParam) as both:
        parse(conversation=CONV, previous_response_id="resp_" + "0" * 32)
    assert both.value.extra["param"] == "previous_response_id"


def test_system_and_developer_messages_join_the_instructions() -> None:
    request = parse(
        instructions="First.",
        input=[
            {"role": "system", "content": "Second."},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            },
        ],
    )

    assert request.turn_instructions == "First.\n\nSecond." and request.stored_content() == "ab"


def test_a_stored_response_takes_exactly_one_user_message() -> None:
    two = parse(input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(InvalidParam) as refused:
        two.stored_content()
    assert refused.value.extra["param"] == "input"
    assert len(parse(input=two_messages(), store=False).conversation_messages) == 2


def two_messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ],
)
def test_what_the_models_cannot_honour_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParam) as refused:
        parse(**body)
    assert refused.value.extra["param"] == param


@pytest.mark.parametrize(
    "harmless",
    [
        {"background": False},
        {"tools": []},
        {"text": {"format": {"type": "text"}}},
        {"truncation": "disabled"},
        {"top_p": None},
    ],
)
def test_defaults_that_ask_for_nothing_are_accepted(harmless: dict[str, Any]) -> None:
    assert parse(**harmless).model == "echo"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": None}, "model"),
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": ["x"] * 101}, "input"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": "a\x00b"}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 1.5}, "max_output_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": ["x"] * 5}, "stop"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"store": "yes"}, "store"),
        ({"stream": 1}, "stream"),
        ({"store": False, "conversation": CONV}, "store"),
    ],
)
def test_invalid_values_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidParam) as refused:
        parse(**body)
    assert refused.value.extra["param"] == param
