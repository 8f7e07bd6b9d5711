"""The port's requests as the model server receives them: every message in order, with its role,
and the generation parameters set or unset as given."""

from __future__ import annotations

from llm_backend import codec
from llm_backend.ports import ChatRequest, ContextMessage, GenerationParams, Role

MESSAGES = (
    ContextMessage(Role.SYSTEM, "Be brief."),
    ContextMessage(Role.USER, "first question"),
    ContextMessage(Role.ASSISTANT, "first answer"),
    ContextMessage(Role.USER, "second question, ünïcode ✓"),
)


def test_a_request_reaches_the_server_whole_and_in_order() -> None:
    request = ChatRequest(
        model="echo",
        messages=MESSAGES,
        params=GenerationParams(max_tokens=7, temperature=0.5, stop=("END", "STOP")),
        request_id="req-1",
    )

    message = codec.request_to_pb(request)
    back = codec.request_from_pb(type(message).FromString(message.SerializeToString()))

    assert tuple(back.messages) == MESSAGES
    assert (back.model, back.request_id) == ("echo", "req-1")
    assert back.params == GenerationParams(max_tokens=7, temperature=0.5, stop=("END", "STOP"))


def test_unset_parameters_stay_unset() -> None:
    request = ChatRequest(model="echo", messages=MESSAGES[1:2], params=GenerationParams(), request_id="")

    message = codec.request_to_pb(request)
    back = codec.request_from_pb(type(message).FromString(message.SerializeToString()))

    assert message.HasField("params")
    assert not message.params.HasField("max_tokens") and not message.params.HasField("temperature")
    assert back.params == GenerationParams() and tuple(back.messages) == MESSAGES[1:2]
