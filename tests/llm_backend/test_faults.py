"""The model server's fault injection (a testing aid): delays and failures, on a real gRPC server."""

from __future__ import annotations

import pytest

from llm_backend.echo import EchoChatBackend
from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from llm_backend.faults import FaultyChatBackend
from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Delta, GenerationParams, Role, StreamEnd, StreamEvent
from llm_backend.server import start_server


def request(content: str) -> ChatRequest:
    return ChatRequest(model="echo", messages=[ContextMessage(Role.USER, content)], params=GenerationParams())


async def test_the_first_calls_fail_then_the_model_answers() -> None:
    backend = FaultyChatBackend(EchoChatBackend(), fail_calls=2, fail_with="error")

    for _ in range(2):
        with pytest.raises(BackendError) as failed:
            await backend.complete(request("hi"))
        assert type(failed.value) is BackendError
    assert (await backend.complete(request("hi"))).content == "Echo: hi"


async def test_a_failing_stream_sends_its_deltas_first() -> None:
    backend = FaultyChatBackend(EchoChatBackend(), fail_calls=1, fail_with="unavailable", fail_after_deltas=2)
    seen: list[StreamEvent] = []

    async def read() -> None:
        async for event in backend.stream(request("one two three")):
            seen.append(event)

    with pytest.raises(BackendUnavailable):
        await read()

    assert seen == [Delta("Echo: "), Delta("one ")]
    assert isinstance([e async for e in backend.stream(request("one"))][-1], StreamEnd)


async def test_the_faults_reach_a_grpc_client_as_status_codes() -> None:
    served = FaultyChatBackend(EchoChatBackend(), fail_calls=1, fail_with="rejected")
    server, port = await start_server(served, "127.0.0.1:0")
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", max_attempts=1)
    try:
        with pytest.raises(BackendRejected):
            await client.complete(request("hi"))
        assert (await client.complete(request("hi"))).content == "Echo: hi"
    finally:
        await client.close()
        await server.stop(None)


async def test_a_delay_past_the_deadline_is_a_timeout() -> None:
    server, port = await start_server(FaultyChatBackend(EchoChatBackend(), first_delta_delay=30), "127.0.0.1:0")
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", timeout=0.2, first_delta_timeout=0.2)
    try:
        with pytest.raises(BackendTimeout):
            await client.complete(request("hi"))
        with pytest.raises(BackendTimeout):
            [event async for event in client.stream(request("hi"))]
    finally:
        await client.close()
        await server.stop(None)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="fail_with"):
        FaultyChatBackend(EchoChatBackend(), fail_with="sometimes")
    with pytest.raises(ValueError, match="negative"):
        FaultyChatBackend(EchoChatBackend(), first_delta_delay=-1)
