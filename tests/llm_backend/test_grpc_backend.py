"""The gRPC adapter against real model servers running in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_backend.echo import EchoChatBackend
from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import (
    ChatRequest,
    Completion,
    ContextMessage,
    Delta,
    FinishReason,
    GenerationParams,
    Role,
    StreamEnd,
    StreamEvent,
)
from llm_backend.server import start_server
from tests.support import free_port

REQUEST = ChatRequest(
    model="echo-large",
    messages=[ContextMessage(Role.SYSTEM, "sys"), ContextMessage(Role.USER, 'Hi, there\n"friend"')],
    params=GenerationParams(max_tokens=50, temperature=0.2, stop=("zzz",)),
    request_id="req-1",
)


class RecordingBackend(EchoChatBackend):
    """Echo, remembering what the server decoded and whether a stream was cancelled."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.seen: list[ChatRequest] = []
        self.cancelled = asyncio.Event()

    async def complete(self, request: ChatRequest) -> Completion:
        self.seen.append(request)
        return await super().complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.seen.append(request)
        try:
            async for event in super().stream(request):
                yield event
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class FailingBackend(EchoChatBackend):
    def __init__(self, error: BackendError) -> None:
        super().__init__()
        self.error = error

    async def complete(self, request: ChatRequest) -> Completion:
        raise self.error


Serve = Callable[[EchoChatBackend], Awaitable[GrpcChatBackend]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a model server around a backend; returns a client for it. Both stop afterwards."""
    started: list[tuple[grpc.aio.Server, GrpcChatBackend]] = []

    async def start(backend: EchoChatBackend) -> GrpcChatBackend:
        server, port = await start_server(backend, "127.0.0.1:0")
        client = GrpcChatBackend(target=f"127.0.0.1:{port}", timeout=5, initial_backoff=0.01, max_backoff=0.05)
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        await client.close()
        await server.stop(None)


async def test_complete_carries_the_whole_request_and_the_answer(serve: Serve) -> None:
    recording = RecordingBackend()
    client = await serve(recording)

    completion = await client.complete(REQUEST)

    assert completion.content == 'Echo: Hi, there\n"friend"'
    assert completion.finish_reason == FinishReason.STOP
    assert completion.model == "echo-large"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (4, 4)
    assert recording.seen == [REQUEST]


async def test_stream_yields_deltas_then_one_end(serve: Serve) -> None:
    client = await serve(RecordingBackend())

    events = [e async for e in client.stream(REQUEST)]

    assert "".join(e.content for e in events if isinstance(e, Delta)) == 'Echo: Hi, there\n"friend"'
    assert isinstance(events[-1], StreamEnd) and events[-1].usage.output_tokens == 4


async def test_length_finish_reason_crosses_the_wire(serve: Serve) -> None:
    client = await serve(EchoChatBackend())

    completion = await client.complete(
        ChatRequest(
            model="echo", messages=[ContextMessage(Role.USER, "a b c d")], params=GenerationParams(max_tokens=2)
        )
    )

    assert completion.finish_reason == FinishReason.LENGTH


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BackendRejected(), BackendRejected),
        (BackendUnavailable(), BackendUnavailable),
        (BackendTimeout(), BackendTimeout),
        (BackendError(), BackendError),
    ],
)
async def test_server_failures_arrive_as_typed_errors(serve: Serve, error: BackendError, expected: type) -> None:
    client = await serve(FailingBackend(error))

    with pytest.raises(expected) as caught:
        await client.complete(REQUEST)

    assert type(caught.value) is expected


async def test_no_server_is_backend_unavailable() -> None:
    client = GrpcChatBackend(target=f"127.0.0.1:{free_port()}", timeout=2, initial_backoff=0.01, max_backoff=0.02)

    with pytest.raises(BackendUnavailable):
        await client.complete(REQUEST)
    with pytest.raises(BackendUnavailable):
        _ = [e async for e in client.stream(REQUEST)]
    await client.close()


async def test_a_slow_server_hits_the_deadline() -> None:
    server, port = await start_server(EchoChatBackend(token_delay=0.5), "127.0.0.1:0")
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", timeout=0.2)

    with pytest.raises(BackendTimeout):
        await client.complete(REQUEST)
    await client.close()
    await server.stop(None)


async def test_closing_a_stream_early_cancels_it_on_the_server(serve: Serve) -> None:
    recording = RecordingBackend(token_delay=0.05)
    client = await serve(recording)
    long_request = ChatRequest(model="echo", messages=[ContextMessage(Role.USER, " ".join(["word"] * 200))])

    stream = client.stream(long_request)
    first = await anext(stream)
    await stream.aclose()

    assert isinstance(first, Delta)
    await asyncio.wait_for(recording.cancelled.wait(), timeout=1.0)


async def test_a_server_that_comes_up_later_is_reached() -> None:
    port = free_port()
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", timeout=2, initial_backoff=0.01, max_backoff=0.02)
    with pytest.raises(BackendUnavailable):
        await client.complete(REQUEST)

    server, _ = await start_server(EchoChatBackend(), f"127.0.0.1:{port}")
    await asyncio.sleep(0.2)
    for _ in range(20):
        try:
            completion = await client.complete(REQUEST)
            break
        except BackendUnavailable:
            await asyncio.sleep(0.2)
    else:
        pytest.fail("the client never reached the server")

    assert completion.content.startswith("Echo:")
    await client.close()
    await server.stop(None)


async def health_status(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="llm.v1.ChatBackendService"), timeout=2
        )
    return int(reply.status)


class SlowToPrepare(EchoChatBackend):
    def __init__(self) -> None:
        super().__init__()
        self.loaded = asyncio.Event()

    async def prepare(self) -> None:
        await self.loaded.wait()


async def test_health_says_not_serving_until_the_backend_is_prepared() -> None:
    backend = SlowToPrepare()
    server, port = await start_server(backend, "127.0.0.1:0")
    target = f"127.0.0.1:{port}"

    before = await health_status(target)
    backend.loaded.set()
    for _ in range(50):
        if await health_status(target) == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.02)
    after = await health_status(target)

    assert before == health_pb2.HealthCheckResponse.NOT_SERVING
    assert after == health_pb2.HealthCheckResponse.SERVING
    client = GrpcChatBackend(target=target)
    await client.check()  # what the gateway's readiness asks
    await client.close()
    await server.stop(None)


# -- the client span (llm_backend.call_span) ------------------------------------------


def _rpc_spans(span_exporter: Any, method: str) -> tuple[list[Any], list[Any]]:
    """The client and server spans of `method`, in the order they ended."""
    name = f"/llm.v1.ChatBackendService/{method}"
    spans = [s for s in span_exporter.get_finished_spans() if s.name == name]
    return [s for s in spans if s.kind.name == "CLIENT"], [s for s in spans if s.kind.name == "SERVER"]


async def test_a_call_makes_one_client_span_whose_trace_the_server_joins(serve: Serve, span_exporter: Any) -> None:
    client = await serve(RecordingBackend())
    span_exporter.clear()

    await client.complete(REQUEST)

    clients, servers = _rpc_spans(span_exporter, "Complete")
    assert len(clients) == 1  # ours alone: no interceptor on the channel makes a second
    span = clients[0]
    assert dict(span.attributes) == {
        "rpc.system": "grpc",
        "rpc.grpc.status_code": 0,
        "rpc.method": "Complete",
        "rpc.service": "llm.v1.ChatBackendService",
    }
    assert span.status.status_code.name == "UNSET"
    # The traceparent in the call's metadata: the server's span is the client span's child.
    assert [(s.context.trace_id, s.parent.span_id) for s in servers] == [(span.context.trace_id, span.context.span_id)]


async def test_a_failed_call_marks_its_span(serve: Serve, span_exporter: Any) -> None:
    client = await serve(FailingBackend(BackendRejected()))
    span_exporter.clear()

    with pytest.raises(BackendRejected):
        await client.complete(REQUEST)

    (span,), _ = _rpc_spans(span_exporter, "Complete")
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [e.name for e in span.events] == ["exception"]


async def test_a_streams_span_lasts_until_its_end(serve: Serve, span_exporter: Any) -> None:
    client = await serve(RecordingBackend())
    span_exporter.clear()

    events = client.stream(REQUEST)
    await anext(events)
    assert _rpc_spans(span_exporter, "StreamComplete")[0] == []  # still open
    _ = [e async for e in events]

    (span,), _ = _rpc_spans(span_exporter, "StreamComplete")
    assert span.status.status_code.name == "UNSET" and span.attributes["rpc.method"] == "StreamComplete"
    for _ in range(100):  # the server's span ends once its handler has returned, a moment later
        if servers := _rpc_spans(span_exporter, "StreamComplete")[1]:
            break
        await asyncio.sleep(0.01)
    assert [s.parent.span_id for s in servers] == [span.context.span_id]
