"""The echo model: deterministic replies, word-by-word streams, stop and length handling."""

from __future__ import annotations

import pytest

from llm_backend.echo import EchoChatBackend
from llm_backend.errors import BackendRejected
from llm_backend.ports import ChatRequest, ContextMessage, Delta, FinishReason, GenerationParams, Role, StreamEnd


def request(content: str, **params: object) -> ChatRequest:
    return ChatRequest(
        model="echo",
        messages=[ContextMessage(Role.SYSTEM, "be nice"), ContextMessage(Role.USER, content)],
        params=GenerationParams(**params),  # type: ignore[arg-type]
    )


async def test_complete_echoes_the_last_user_message() -> None:
    completion = await EchoChatBackend().complete(request("hello  there\nfriend"))

    assert completion.content == "Echo: hello  there\nfriend"
    assert completion.finish_reason == FinishReason.STOP
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (5, 4)


async def test_the_stream_joins_to_the_completion_and_ends_once() -> None:
    backend = EchoChatBackend()
    events = [e async for e in backend.stream(request('say "hi"\n twice'))]

    deltas = [e.content for e in events if isinstance(e, Delta)]
    assert "".join(deltas) == (await backend.complete(request('say "hi"\n twice'))).content
    assert len(deltas) == 4
    assert isinstance(events[-1], StreamEnd) and sum(isinstance(e, StreamEnd) for e in events) == 1


async def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    completion = await EchoChatBackend().complete(request("one two three four", max_tokens=2))

    assert completion.content == "Echo: one "
    assert completion.finish_reason == FinishReason.LENGTH
    assert completion.usage.output_tokens == 2


async def test_a_stop_sequence_ends_the_answer() -> None:
    completion = await EchoChatBackend().complete(request("one two STOP three", stop=("STOP",)))

    assert completion.content == "Echo: one two "


async def test_a_context_without_a_user_message_is_rejected() -> None:
    with pytest.raises(BackendRejected):
        await EchoChatBackend().complete(ChatRequest(model="echo", messages=[ContextMessage(Role.SYSTEM, "x")]))
