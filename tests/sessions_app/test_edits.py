"""Edits of a session between turns (`SessionEdits`): messages added or removed, metadata replaced."""

from __future__ import annotations

import pytest

from core.errors import PayloadTooLarge
from core.result import Err, Ok
from llm_backend.fake import FakeChatBackend
from llm_backend.ports import Role
from sessions_app.domain import SessionStatus
from sessions_app.errors import (
    ContentTooLarge,
    MessageLimitReached,
    MessageNotFound,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
)
from sessions_app.policy import utc_now_ms_precision
from sessions_app.services import SessionManager, SessionPolicy
from sessions_app.stores.memory import InMemorySessionStore
from tests.sessions_app.builders import fake_manager


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture
def manager(store: InMemorySessionStore) -> SessionManager:
    return fake_manager(FakeChatBackend(), store, SessionPolicy(max_messages_per_session=4, max_content_chars=20))


async def new_session(manager: SessionManager, owner: str = "o_alice") -> str:
    result = await manager.session_create(owner=owner)
    assert isinstance(result, Ok)
    return result.value.id


async def test_appended_messages_are_the_history_of_the_next_turn(manager: SessionManager) -> None:
    session_id = await new_session(manager)

    added = await manager.edits.messages_append(
        owner="o_alice", session_id=session_id, messages=[(Role.USER, "hi"), (Role.ASSISTANT, "hello")]
    )

    assert isinstance(added, Ok) and [m.content for m in added.value] == ["hi", "hello"]
    read = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(read, Ok)
    assert [(m.role, m.content) for m in read.value.messages] == [(Role.USER, "hi"), (Role.ASSISTANT, "hello")]
    assert read.value.session.message_count == 2


async def test_append_obeys_the_limits_owner_and_lock(manager: SessionManager, store: InMemorySessionStore) -> None:
    session_id = await new_session(manager)
    edits = manager.edits

    too_long = await edits.messages_append(owner="o_alice", session_id=session_id, messages=[(Role.USER, "x" * 21)])
    assert isinstance(too_long, Err) and isinstance(too_long.error, ContentTooLarge)
    too_many = await edits.messages_append(owner="o_alice", session_id=session_id, messages=[(Role.USER, "x")] * 5)
    assert isinstance(too_many, Err) and isinstance(too_many.error, MessageLimitReached)
    foreign = await edits.messages_append(owner="o_mallory", session_id=session_id, messages=[(Role.USER, "x")])
    assert isinstance(foreign, Err) and isinstance(foreign.error, SessionNotFound)
    assert isinstance(
        await store.begin_turn(session_id, owner="o_alice", token="running", lock_seconds=30, history_limit=0), Ok
    )
    locked = await edits.messages_append(owner="o_alice", session_id=session_id, messages=[(Role.USER, "x")])
    assert isinstance(locked, Err) and isinstance(locked.error, TurnInProgress)
    await store.release_turn(session_id, token="running")
    # Refused appends left nothing, and the lock the refusal took was given back.
    assert isinstance(await edits.messages_append(owner="o_alice", session_id=session_id, messages=[]), Ok)
    read = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(read, Ok) and read.value.messages == ()


async def test_an_archived_session_is_brought_back_to_take_an_edit(manager: SessionManager) -> None:
    session_id = await new_session(manager)
    ended = await manager.session_end(owner="o_alice", session_id=session_id)
    assert isinstance(ended, Ok) and ended.value.status == SessionStatus.ARCHIVED

    replaced = await manager.edits.metadata_replace(owner="o_alice", session_id=session_id, metadata={"k": "v"})

    assert isinstance(replaced, Ok)
    assert replaced.value.status == SessionStatus.ACTIVE and replaced.value.metadata == {"k": "v"}


async def test_an_ended_session_takes_no_message(manager: SessionManager, store: InMemorySessionStore) -> None:
    session_id = await new_session(manager)
    await store.set_status(session_id, owner="o_alice", status=SessionStatus.ENDED, at=utc_now_ms_precision())

    refused = await manager.edits.messages_append(owner="o_alice", session_id=session_id, messages=[(Role.USER, "x")])

    assert isinstance(refused, Err) and isinstance(refused.error, SessionNotActive)


async def test_metadata_and_message_delete(manager: SessionManager) -> None:
    session_id = await new_session(manager)
    added = await manager.edits.messages_append(
        owner="o_alice", session_id=session_id, messages=[(Role.USER, "a"), (Role.USER, "b")]
    )
    assert isinstance(added, Ok)

    too_big = await manager.edits.metadata_replace(owner="o_alice", session_id=session_id, metadata={"k": "v" * 5000})
    assert isinstance(too_big, Err) and isinstance(too_big.error, PayloadTooLarge)
    deleted = await manager.edits.message_delete(owner="o_alice", session_id=session_id, message_id=added.value[0].id)
    assert isinstance(deleted, Ok) and deleted.value.message_count == 1
    again = await manager.edits.message_delete(owner="o_alice", session_id=session_id, message_id=added.value[0].id)
    assert isinstance(again, Err) and isinstance(again.error, MessageNotFound)
    read = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(read, Ok) and [m.content for m in read.value.messages] == ["b"]
