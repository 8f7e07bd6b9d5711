"""Streamed turns in the service: what is relayed, what is kept when a stream is cut short."""

from __future__ import annotations

import asyncio

import pytest

from core.result import Err, Ok
from llm_backend.errors import BackendError, BackendUnavailable
from llm_backend.fake import FakeChatBackend
from llm_backend.ports import Delta, FinishReason
from sessions_app.domain import MessageStatus
from sessions_app.errors import TurnInProgress
from sessions_app.services import SessionManager, SessionPolicy
from sessions_app.stores.memory import InMemorySessionStore
from sessions_app.turn_stream import TurnDone, TurnStream
from sessions_app.turns import TurnRequest
from tests.sessions_app.builders import fake_manager

CONTENT = 'one two "three"\nfour five'


@pytest.fixture
def backend() -> FakeChatBackend:
    return FakeChatBackend()


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture
async def manager(store: InMemorySessionStore, backend: FakeChatBackend) -> SessionManager:
    return fake_manager(backend, store)


@pytest.fixture
async def session_id(manager: SessionManager) -> str:
    result = await manager.session_create(owner="o_alice")
    assert isinstance(result, Ok)
    return result.value.id


async def start(manager: SessionManager, session_id: str, content: str = CONTENT) -> TurnStream:
    result = await manager.turn_stream(TurnRequest(owner="o_alice", session_id=session_id, content=content))
    assert isinstance(result, Ok), result
    return result.value


async def read_into(received: list[str], stream: TurnStream) -> None:
    async for event in stream.events():
        if isinstance(event, Delta):
            received.append(event.content)


async def history(manager: SessionManager, session_id: str) -> list[tuple[str, str, MessageStatus]]:
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok)
    return [(m.role.value, m.content, m.status) for m in loaded.value.messages]


async def test_a_stream_relays_every_delta_then_stores_the_whole_reply(
    manager: SessionManager, session_id: str
) -> None:
    stream = await start(manager, session_id)

    events = [e async for e in stream.events()]

    deltas = [e.content for e in events if isinstance(e, Delta)]
    assert "".join(deltas) == f"Echo: {CONTENT}" and len(deltas) == 6
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert done.outcome.message.content == f"Echo: {CONTENT}"
    assert done.outcome.finish_reason == FinishReason.STOP
    assert done.outcome.usage.output_tokens == 6
    assert await history(manager, session_id) == [
        ("user", CONTENT, MessageStatus.COMPLETE),
        ("assistant", f"Echo: {CONTENT}", MessageStatus.COMPLETE),
    ]


async def test_a_failure_before_the_first_delta_keeps_nothing(
    manager: SessionManager, session_id: str, backend: FakeChatBackend
) -> None:
    backend.fail_with = BackendUnavailable()

    result = await manager.turn_stream(TurnRequest(owner="o_alice", session_id=session_id, content="hi"))

    assert isinstance(result, Err) and isinstance(result.error, BackendUnavailable)
    assert await history(manager, session_id) == []
    backend.fail_with = None
    assert isinstance(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="retry")), Ok)


async def test_closing_the_stream_early_keeps_the_partial_reply_as_cancelled(
    manager: SessionManager, session_id: str, backend: FakeChatBackend
) -> None:
    stream = await start(manager, session_id)
    events = stream.events()
    seen = [await anext(events), await anext(events)]

    await events.aclose()  # type: ignore[attr-defined]

    assert backend.stream_closed_early.is_set()
    partial = "".join(e.content for e in seen if isinstance(e, Delta))
    assert await history(manager, session_id) == [
        ("user", CONTENT, MessageStatus.COMPLETE),
        ("assistant", partial, MessageStatus.CANCELLED),
    ]
    assert stream.outcome is not None and stream.outcome.finish_reason is None
    assert isinstance(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="next")), Ok)


async def test_cancelling_the_reading_task_keeps_the_partial_reply(
    manager: SessionManager, session_id: str, backend: FakeChatBackend
) -> None:
    backend.pause_after = 1  # the second delta never comes
    stream = await start(manager, session_id)
    received: list[str] = []
    reader = asyncio.create_task(read_into(received, stream))
    await asyncio.sleep(0.02)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    assert received == ["Echo: "]
    assert await history(manager, session_id) == [
        ("user", CONTENT, MessageStatus.COMPLETE),
        ("assistant", "Echo: ", MessageStatus.CANCELLED),
    ]
    assert backend.stream_closed_early.is_set()


async def test_a_model_failure_mid_stream_keeps_the_partial_reply_as_incomplete(
    manager: SessionManager, session_id: str, backend: FakeChatBackend
) -> None:
    backend.fail_with, backend.fail_after = BackendError(), 2
    stream = await start(manager, session_id)
    received: list[str] = []

    with pytest.raises(BackendError):
        await read_into(received, stream)

    assert received == ["Echo: ", "one "]
    assert await history(manager, session_id) == [
        ("user", CONTENT, MessageStatus.COMPLETE),
        ("assistant", "Echo: one ", MessageStatus.INCOMPLETE),
    ]


async def test_an_unexpected_error_mid_stream_keeps_the_partial_reply_and_frees_the_session(
    manager: SessionManager, session_id: str, backend: FakeChatBackend
) -> None:
    backend.fail_with, backend.fail_after = RuntimeError("not a BackendError"), 2
    stream = await start(manager, session_id)
    received: list[str] = []

    with pytest.raises(RuntimeError):
        await read_into(received, stream)

    assert received == ["Echo: ", "one "]
    assert await history(manager, session_id) == [
        ("user", CONTENT, MessageStatus.COMPLETE),
        ("assistant", "Echo: one ", MessageStatus.INCOMPLETE),
    ]
    backend.fail_with = None  # the turn lock went with it: the next turn runs
    assert isinstance(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="next")), Ok)


async def test_a_stream_holds_the_session_and_keeps_its_lock_alive(
    store: InMemorySessionStore, backend: FakeChatBackend
) -> None:
    manager = fake_manager(backend, store, SessionPolicy(turn_lock_seconds=0.15))
    created = await manager.session_create(owner="o_alice")
    assert isinstance(created, Ok)
    session_id = created.value.id
    stream = await start(manager, session_id, content=" ".join(["w"] * 8))
    events = stream.events()

    for _ in range(6):  # slower than the lock's lifetime, in all
        await anext(events)
        await asyncio.sleep(0.05)
        other = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="me too"))
        assert isinstance(other, Err) and isinstance(other.error, TurnInProgress)

    rest = [e async for e in events]
    assert isinstance(rest[-1], TurnDone)
