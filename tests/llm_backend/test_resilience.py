"""Retries, circuit breakers and failover across model-server targets."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from llm_backend.echo import EchoChatBackend
from llm_backend.errors import BackendError, BackendRejected, BackendUnavailable
from llm_backend.fake import FakeChatBackend
from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, Completion, ContextMessage, Delta, Role, StreamEvent
from llm_backend.resilience import BreakerState, CircuitBreaker, FailoverChatBackend, RoutingChatBackend
from llm_backend.server import start_server

REQUEST = ChatRequest(model="echo", messages=[ContextMessage(Role.USER, "one two three")])


async def drain(events: AsyncGenerator[StreamEvent, None], into: list[StreamEvent]) -> None:
    async for event in events:
        into.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_a_run_of_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t", failures_to_open=3, open_seconds=10, clock=clock)
    for _ in range(2):
        breaker.admit()
        breaker.failed()
    assert breaker.state == BreakerState.CLOSED

    breaker.admit()
    breaker.failed()

    assert breaker.state == BreakerState.OPEN
    with pytest.raises(BackendUnavailable) as refused:
        breaker.admit()
    assert refused.value.headers["Retry-After"] == "10"


def test_after_the_cool_down_one_probe_goes_through_and_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t", failures_to_open=1, open_seconds=5, clock=clock)
    breaker.admit()
    breaker.failed()
    clock.now += 5

    breaker.admit()  # the probe
    with pytest.raises(BackendUnavailable):
        breaker.admit()  # only one at a time
    breaker.succeeded()

    assert breaker.state == BreakerState.CLOSED
    breaker.admit()


def test_a_failed_probe_opens_it_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t", failures_to_open=3, open_seconds=5, clock=clock)
    for _ in range(3):
        breaker.failed()
    clock.now += 6
    breaker.admit()

    breaker.failed()

    assert breaker.state == BreakerState.OPEN


async def test_a_cancelled_call_is_no_verdict_on_the_target() -> None:
    import asyncio

    clock = Clock()
    breaker = CircuitBreaker("t", failures_to_open=2, open_seconds=5, clock=clock)
    slow = FakeChatBackend(gate=asyncio.Event())  # never answers
    failover = FailoverChatBackend([(slow, breaker)])

    async def cancelled_call() -> None:
        call = asyncio.create_task(failover.complete(REQUEST))
        await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    breaker.admit()
    breaker.failed()
    await cancelled_call()
    breaker.admit()
    breaker.failed()
    assert breaker.state == BreakerState.OPEN  # the cancellation did not wipe the first failure

    clock.now += 5
    await cancelled_call()  # the probe is cancelled...
    breaker.admit()  # ...and the next call may probe instead


class Down(EchoChatBackend):
    """Unavailable before it answers, counting the calls it gets."""

    def __init__(self, error: BackendError | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.error = error or BackendUnavailable()

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        raise self.error

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.calls += 1
        raise self.error
        yield  # pragma: no cover - makes this an async generator


def failover(*backends: EchoChatBackend, failures_to_open: int = 2) -> FailoverChatBackend:
    return FailoverChatBackend(
        [
            (b, CircuitBreaker(f"t{i}", failures_to_open=failures_to_open, open_seconds=60))
            for i, b in enumerate(backends)
        ]
    )


async def test_the_next_target_serves_when_the_first_is_down() -> None:
    first, second = Down(), FakeChatBackend()
    backend = failover(first, second)

    completion = await backend.complete(REQUEST)
    events = [e async for e in backend.stream(REQUEST)]

    assert completion.content == "Echo: one two three"
    assert "".join(e.content for e in events if isinstance(e, Delta)) == "Echo: one two three"
    assert first.calls == 2 and len(second.requests) == 2
    # Two failures opened the first target's breaker: it is skipped without a call.
    await backend.complete(REQUEST)
    assert first.calls == 2
    assert backend.breaker_states() == {"t0": "open", "t1": "closed"}


async def test_all_targets_down_is_unavailable_with_retry_after() -> None:
    backend = failover(Down(), Down(), failures_to_open=1)

    with pytest.raises(BackendUnavailable):
        await backend.complete(REQUEST)
    with pytest.raises(BackendUnavailable) as fast:
        await backend.complete(REQUEST)  # both breakers open now

    assert int(fast.value.headers["Retry-After"]) >= 59


async def test_a_rejected_request_neither_fails_over_nor_counts_against_the_target() -> None:
    rejecting, spare = Down(BackendRejected()), FakeChatBackend()
    backend = failover(rejecting, spare, failures_to_open=1)

    for _ in range(3):
        with pytest.raises(BackendRejected):
            await backend.complete(REQUEST)

    assert rejecting.calls == 3 and spare.requests == []
    assert backend.breaker_states()["t0"] == "closed"


async def test_no_failover_after_the_first_delta() -> None:
    breaking, spare = FakeChatBackend(fail_with=BackendUnavailable(), fail_after=1), FakeChatBackend()
    backend = failover(breaking, spare)

    received: list[StreamEvent] = []
    with pytest.raises(BackendUnavailable):
        await drain(backend.stream(REQUEST), received)

    assert [e.content for e in received if isinstance(e, Delta)] == ["Echo: "]
    assert spare.requests == []


async def test_routes_pick_targets_by_model() -> None:
    default, special = FakeChatBackend(), FakeChatBackend()
    backend = RoutingChatBackend({"*": failover(default), "special": failover(special)})

    await backend.complete(REQUEST)
    await backend.complete(ChatRequest(model="special", messages=REQUEST.messages))

    assert [r.model for r in default.requests] == ["echo"] and [r.model for r in special.requests] == ["special"]


class FlakyServer(EchoChatBackend):
    """Unavailable for its first `failures` calls, then fine; streams can fail after a delta."""

    def __init__(self, failures: int, fail_mid_stream: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.fail_mid_stream = fail_mid_stream
        self.calls = 0

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendUnavailable()
        return await super().complete(request)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.calls += 1
        if self.calls <= self.failures and not self.fail_mid_stream:
            raise BackendUnavailable()
        async for event in super().stream(request):
            yield event
            if self.fail_mid_stream:
                raise BackendUnavailable()


async def test_grpc_retries_transient_unavailability_from_its_service_config() -> None:
    flaky = FlakyServer(failures=2)
    server, port = await start_server(flaky, "127.0.0.1:0")
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", max_attempts=3, initial_backoff=0.01, max_backoff=0.02)

    completion = await client.complete(REQUEST)
    events = [e async for e in client.stream(REQUEST)]

    assert completion.content == "Echo: one two three" and flaky.calls == 4  # 2 failed + 1, then the stream
    assert "".join(e.content for e in events if isinstance(e, Delta)) == "Echo: one two three"
    await client.close()
    await server.stop(None)


async def test_one_attempt_means_no_retries_not_a_broken_channel() -> None:
    flaky = FlakyServer(failures=1)
    server, port = await start_server(flaky, "127.0.0.1:0")
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", max_attempts=1)

    with pytest.raises(BackendUnavailable):
        await client.complete(REQUEST)
    completion = await client.complete(REQUEST)

    assert completion.content == "Echo: one two three" and flaky.calls == 2
    await client.close()
    await server.stop(None)


async def test_grpc_never_retries_a_stream_after_its_first_delta() -> None:
    flaky = FlakyServer(failures=0, fail_mid_stream=True)
    server, port = await start_server(flaky, "127.0.0.1:0")
    client = GrpcChatBackend(target=f"127.0.0.1:{port}", max_attempts=5, initial_backoff=0.01, max_backoff=0.02)

    received: list[StreamEvent] = []
    with pytest.raises(BackendUnavailable):
        await drain(client.stream(REQUEST), received)

    assert len(received) == 1 and flaky.calls == 1
    await client.close()
    await server.stop(None)
