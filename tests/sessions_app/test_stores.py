"""The `ActiveSessionStore` contract, run against the in-memory and the Redis adapter alike (the
archiver's port, `ArchiverSessionStore`, has its own: test_archiver_store.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.errors import InvalidRequest
from core.result import Err, Ok, unwrap
from llm_backend.ports import TokenUsage
from sessions_app.domain import KeyedWrite, Role, SessionStatus
from sessions_app.errors import (
    MessageNotFound,
    SessionLimitReached,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
)
from sessions_app.ports import KEYED_WRITES_KEPT, ActiveSessionStore
from tests.factories import BASE_TIME, make_session, make_turn

LIMIT = 100


async def begin(store: ActiveSessionStore, session_id: str, owner: str = "o_alice", token: str = "t1", **kw):  # type: ignore[no-untyped-def]
    return await store.begin_turn(
        session_id,
        owner=owner,
        token=token,
        lock_seconds=kw.get("lock_seconds", 30),
        history_limit=kw.get("history", 50),
    )


async def run_turn(store: ActiveSessionStore, session_id: str, n: int, owner: str = "o_alice") -> None:
    assert isinstance(await begin(store, session_id, owner, token=f"t{n}"), Ok)
    result = await store.append_turn(
        session_id, owner=owner, token=f"t{n}", messages=make_turn(n), usage=TokenUsage(3, 5), at=BASE_TIME
    )
    assert isinstance(result, Ok)


async def test_create_then_load_returns_the_session_without_messages(any_store: ActiveSessionStore) -> None:
    session = make_session()
    assert await any_store.create(session, max_sessions_per_owner=LIMIT) == Ok(None)

    loaded = await any_store.load(session.id, owner="o_alice")

    assert isinstance(loaded, Ok)
    assert loaded.value.session == session
    assert loaded.value.messages == ()


async def test_another_owner_sees_nothing(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)

    assert isinstance(await any_store.load(session.id, owner="o_mallory"), Err)
    assert isinstance((await begin(any_store, session.id, owner="o_mallory")).error, SessionNotFound)  # type: ignore[union-attr]
    assert isinstance(await any_store.delete(session.id, owner="o_mallory"), Err)
    assert isinstance(await any_store.load(session.id, owner="o_alice"), Ok)


async def test_turn_appends_both_messages_in_order_and_adds_usage(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)

    await run_turn(any_store, session.id, 1)
    await run_turn(any_store, session.id, 2)

    loaded = await any_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok)
    assert [m.content for m in loaded.value.messages] == ["question 1", "answer 1", "question 2", "answer 2"]
    assert loaded.value.session.message_count == 4
    assert loaded.value.session.usage == TokenUsage(6, 10)


async def test_load_pages_the_messages_oldest_first(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    for n in (1, 2, 3):
        await run_turn(any_store, session.id, n)

    def contents(result: object) -> list[str]:
        assert isinstance(result, Ok)
        return [m.content for m in result.value.messages]

    assert contents(await any_store.load(session.id, owner="o_alice", limit=2)) == ["question 1", "answer 1"]
    assert contents(await any_store.load(session.id, owner="o_alice", offset=3, limit=2)) == ["answer 2", "question 3"]
    assert contents(await any_store.load(session.id, owner="o_alice", offset=5, limit=10)) == ["answer 3"]
    assert contents(await any_store.load(session.id, owner="o_alice", offset=6, limit=10)) == []
    assert len(contents(await any_store.load(session.id, owner="o_alice", offset=1))) == 5
    paged = await any_store.load(session.id, owner="o_alice", offset=4, limit=1)
    assert isinstance(paged, Ok) and paged.value.session.message_count == 6


async def test_stored_message_round_trips_exactly(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    question, answer = make_turn(1)
    answer = answer.__class__(
        id=answer.id, role=answer.role, content='line "one"\nline two ✓', created_at=answer.created_at
    )
    await begin(any_store, session.id)

    await any_store.append_turn(
        session.id, owner="o_alice", token="t1", messages=(question, answer), usage=TokenUsage(), at=BASE_TIME
    )

    loaded = await any_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok)
    assert loaded.value.messages == (question, answer)


async def test_a_second_turn_is_refused_while_one_holds_the_lock(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)

    assert isinstance(await begin(any_store, session.id, token="a"), Ok)
    second = await begin(any_store, session.id, token="b")

    assert isinstance(second, Err) and isinstance(second.error, TurnInProgress)


async def test_release_frees_the_lock_and_stores_nothing(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="a")

    await any_store.release_turn(session.id, token="a")

    assert isinstance(await begin(any_store, session.id, token="b"), Ok)
    loaded = await any_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok) and loaded.value.messages == ()


async def test_release_with_a_foreign_token_keeps_the_lock(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="a")

    await any_store.release_turn(session.id, token="not-a")

    assert isinstance(await begin(any_store, session.id, token="b"), Err)


async def test_a_lock_expires_by_itself(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="crashed", lock_seconds=0.2)

    await asyncio.sleep(0.35)

    assert isinstance(await begin(any_store, session.id, token="next"), Ok)


async def test_append_without_the_lock_stores_nothing(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="current")

    result = await any_store.append_turn(
        session.id, owner="o_alice", token="stale", messages=make_turn(1), usage=TokenUsage(1, 1), at=BASE_TIME
    )

    assert isinstance(result, Err) and isinstance(result.error, TurnInProgress)
    loaded = await any_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok) and loaded.value.messages == () and loaded.value.session.usage == TokenUsage()


async def test_append_after_delete_is_not_found_and_stores_nothing(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="t")
    await any_store.delete(session.id, owner="o_alice")

    result = await any_store.append_turn(
        session.id, owner="o_alice", token="t", messages=make_turn(1), usage=TokenUsage(), at=BASE_TIME
    )

    assert isinstance(result, Err) and isinstance(result.error, SessionNotFound)
    assert isinstance(await any_store.load(session.id, owner="o_alice"), Err)


async def test_history_limit_returns_the_newest_messages(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    for n in range(1, 4):
        await run_turn(any_store, session.id, n)

    result = await begin(any_store, session.id, token="x", history=3)

    assert isinstance(result, Ok)
    assert [(m.role, m.content) for m in result.value.messages] == [
        (Role.ASSISTANT, "answer 2"),
        (Role.USER, "question 3"),
        (Role.ASSISTANT, "answer 3"),
    ]
    assert result.value.session.message_count == 6
    stored = await any_store.load(session.id, owner="o_alice")
    assert isinstance(stored, Ok) and result.value.last_message_id == stored.value.messages[-1].id


async def test_a_turn_in_a_new_session_has_no_history(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)

    result = await begin(any_store, session.id, token="x")

    assert isinstance(result, Ok)
    assert (result.value.messages, result.value.last_message_id) == ((), None)


async def test_ended_session_takes_no_turn_and_end_waits_for_a_running_turn(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="running")

    refused = await any_store.set_status(session.id, owner="o_alice", status=SessionStatus.ENDED, at=BASE_TIME)
    assert isinstance(refused, Err) and isinstance(refused.error, TurnInProgress)

    await any_store.release_turn(session.id, token="running")
    ended = await any_store.set_status(session.id, owner="o_alice", status=SessionStatus.ENDED, at=BASE_TIME)
    assert isinstance(ended, Ok) and ended.value.status == SessionStatus.ENDED

    result = await begin(any_store, session.id, token="late")
    assert isinstance(result, Err) and isinstance(result.error, SessionNotActive)


async def test_list_by_owner_pages_newest_first_without_gaps_or_repeats(any_store: ActiveSessionStore) -> None:
    mine = [make_session(minutes=i) for i in range(7)]
    for session in mine:
        await any_store.create(session, max_sessions_per_owner=LIMIT)
    await any_store.create(make_session(owner="o_bob"), max_sessions_per_owner=LIMIT)

    seen, cursor, pages = [], None, 0
    while True:
        page = await any_store.list_by_owner("o_alice", limit=3, cursor=cursor)
        seen += [s.id for s in page.sessions]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == [s.id for s in reversed(mine)]
    assert pages == 3


async def test_a_page_of_many_sessions_comes_back_whole_newest_first_each_with_its_own_metadata(
    any_store: ActiveSessionStore,
) -> None:
    mine = [
        make_session(minutes=i, model=f"model-{i}", system_prompt=f"prompt {i}", metadata={"n": i}) for i in range(40)
    ]
    for i, session in enumerate(mine):
        await any_store.create(session, max_sessions_per_owner=LIMIT)
        await any_store.create(make_session(owner="o_bob", minutes=i), max_sessions_per_owner=LIMIT)
    await run_turn(any_store, mine[7].id, 1)  # one that has changed since its creation
    mine[7] = unwrap(await any_store.get(mine[7].id, owner="o_alice"))
    assert mine[7].message_count == 2

    page = await any_store.list_by_owner("o_alice", limit=LIMIT, cursor=None)

    assert page.sessions == tuple(reversed(mine))
    assert page.next_cursor is None


async def test_list_by_owner_rejects_a_tampered_cursor(any_store: ActiveSessionStore) -> None:
    with pytest.raises(InvalidRequest):
        await any_store.list_by_owner("o_alice", limit=3, cursor="not-a-cursor")


async def test_sessions_per_owner_are_capped_and_freed_by_delete(any_store: ActiveSessionStore) -> None:
    first, second, third = (make_session(minutes=i) for i in range(3))
    assert await any_store.create(first, max_sessions_per_owner=2) == Ok(None)
    assert await any_store.create(second, max_sessions_per_owner=2) == Ok(None)

    refused = await any_store.create(third, max_sessions_per_owner=2)
    assert isinstance(refused, Err) and isinstance(refused.error, SessionLimitReached)
    assert isinstance(await any_store.load(third.id, owner="o_alice"), Err)
    assert await any_store.create(make_session(owner="o_bob"), max_sessions_per_owner=2) == Ok(None)

    await any_store.delete(first.id, owner="o_alice")
    assert await any_store.create(third, max_sessions_per_owner=2) == Ok(None)


async def test_delete_removes_the_session_everywhere(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await run_turn(any_store, session.id, 1)

    assert await any_store.delete(session.id, owner="o_alice") == Ok(None)

    assert isinstance(await any_store.load(session.id, owner="o_alice"), Err)
    assert (await any_store.list_by_owner("o_alice", limit=10, cursor=None)).sessions == ()
    assert await any_store.list_idle(before=BASE_TIME + timedelta(days=1), limit=10) == []
    assert isinstance(await any_store.delete(session.id, owner="o_alice"), Err)


async def test_get_returns_metadata_for_the_owner_only(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await run_turn(any_store, session.id, 1)

    mine = await any_store.get(session.id, owner="o_alice")

    assert isinstance(mine, Ok) and mine.value.message_count == 2 and mine.value.id == session.id
    assert isinstance(await any_store.get(session.id, owner="o_bob"), Err)


async def test_extending_a_turn_keeps_its_lock_past_the_first_expiry(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="long", lock_seconds=0.3)

    assert await any_store.extend_turn(session.id, token="long", lock_seconds=5) is True
    await asyncio.sleep(0.45)

    assert isinstance(await begin(any_store, session.id, token="other"), Err)
    assert await any_store.extend_turn(session.id, token="other", lock_seconds=5) is False


async def test_set_metadata_replaces_it_for_the_owner_only(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    later = BASE_TIME + timedelta(minutes=5)

    assert isinstance(await any_store.set_metadata(session.id, owner="o_mallory", metadata={"x": 1}, at=later), Err)
    replaced = await any_store.set_metadata(session.id, owner="o_alice", metadata={"topic": "demo"}, at=later)

    assert isinstance(replaced, Ok)
    assert replaced.value.metadata == {"topic": "demo"} and replaced.value.last_activity_at == later
    got = await any_store.get(session.id, owner="o_alice")
    assert isinstance(got, Ok) and got.value.metadata == {"topic": "demo"}


async def test_delete_message_removes_one_and_keeps_the_order(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await run_turn(any_store, session.id, 1)
    await run_turn(any_store, session.id, 2)
    loaded = await any_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok)
    doomed = loaded.value.messages[1]

    assert isinstance(
        (await any_store.delete_message(session.id, owner="o_mallory", message_id=doomed.id, at=BASE_TIME)).error,  # type: ignore[union-attr]
        SessionNotFound,
    )
    deleted = await any_store.delete_message(session.id, owner="o_alice", message_id=doomed.id, at=BASE_TIME)

    assert isinstance(deleted, Ok) and deleted.value.message_count == 3
    after = await any_store.load(session.id, owner="o_alice")
    assert isinstance(after, Ok)
    assert [m.content for m in after.value.messages] == ["question 1", "question 2", "answer 2"]
    again = await any_store.delete_message(session.id, owner="o_alice", message_id=doomed.id, at=BASE_TIME)
    assert isinstance(again.error, MessageNotFound)  # type: ignore[union-attr]


async def test_delete_message_waits_for_a_running_turn(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await run_turn(any_store, session.id, 1)
    loaded = await any_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok)
    assert isinstance(await begin(any_store, session.id, token="running"), Ok)

    refused = await any_store.delete_message(
        session.id, owner="o_alice", message_id=loaded.value.messages[0].id, at=BASE_TIME
    )

    assert isinstance(refused.error, TurnInProgress)  # type: ignore[union-attr]
    still = await any_store.load(session.id, owner="o_alice")
    assert isinstance(still, Ok) and len(still.value.messages) == 2


async def keyed_turn(store: ActiveSessionStore, session_id: str, n: int, key: str, ttl: int = 600) -> None:
    assert isinstance(await begin(store, session_id, token=f"k{n}"), Ok)
    appended = await store.append_turn(
        session_id,
        owner="o_alice",
        token=f"k{n}",
        messages=make_turn(n),
        usage=TokenUsage(3, 5),
        at=BASE_TIME,
        keyed=KeyedWrite(key, f'{{"turn": {n}}}'.encode(), ttl),
    )
    assert isinstance(appended, Ok)


async def test_a_turn_stored_with_a_key_is_found_by_it_instead_of_locking(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await keyed_turn(any_store, session.id, 1, "key-1")

    found = await any_store.begin_turn(
        session.id, owner="o_alice", token="retry", lock_seconds=30, history_limit=50, key="key-1"
    )
    other = await any_store.begin_turn(
        session.id, owner="o_bob", token="x", lock_seconds=30, history_limit=50, key="key-1"
    )

    assert isinstance(found, Ok) and found.value.answered == b'{"turn": 1}'
    assert found.value.session.message_count == 2
    assert isinstance(other, Err) and isinstance(other.error, SessionNotFound)  # another owner learns nothing
    assert await any_store.keyed_write(session.id, owner="o_alice", key="key-1") == b'{"turn": 1}'
    assert await any_store.keyed_write(session.id, owner="o_alice", key="key-2") is None
    assert await any_store.keyed_write(session.id, owner="o_bob", key="key-1") is None
    assert await any_store.keyed_write("no-such-session", owner="o_alice", key="key-1") is None
    # Nothing was locked: a turn under another key (or none) goes ahead.
    unkeyed = await begin(any_store, session.id, token="next")
    assert isinstance(unkeyed, Ok) and unkeyed.value.answered is None and len(unkeyed.value.messages) == 2


async def test_a_key_no_stored_turn_was_sent_with_locks_as_usual(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await keyed_turn(any_store, session.id, 1, "key-1")
    await run_turn(any_store, session.id, 2)  # a turn without a key remembers none

    begun = await any_store.begin_turn(
        session.id, owner="o_alice", token="t", lock_seconds=30, history_limit=50, key="key-2"
    )

    assert isinstance(begun, Ok) and begun.value.answered is None and len(begun.value.messages) == 4
    assert isinstance(await begin(any_store, session.id, token="other"), Err)  # it took the lock


async def test_a_session_keeps_its_newest_keyed_turns_for_their_lifetime(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    for n in range(KEYED_WRITES_KEPT + 1):
        await keyed_turn(any_store, session.id, n, f"key-{n}", ttl=1 if n == KEYED_WRITES_KEPT else 600)

    async def answered(key: str) -> bytes | None:
        begun = await any_store.begin_turn(
            session.id, owner="o_alice", token=key, lock_seconds=30, history_limit=0, key=key
        )
        assert isinstance(begun, Ok)
        if begun.value.answered is None:
            await any_store.release_turn(session.id, token=key)
        return begun.value.answered

    assert await answered("key-0") is None  # the oldest, beyond the newest KEYED_WRITES_KEPT
    assert await answered("key-1") == b'{"turn": 1}'
    assert await answered(f"key-{KEYED_WRITES_KEPT}") == f'{{"turn": {KEYED_WRITES_KEPT}}}'.encode()
    await asyncio.sleep(1.1)
    assert await answered(f"key-{KEYED_WRITES_KEPT}") is None  # past its lifetime


async def test_a_session_lists_the_keyed_turns_it_keeps_newest_first_lapsed_too_to_its_owner_only(
    any_store: ActiveSessionStore,
) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await keyed_turn(any_store, session.id, 1, "key-1", ttl=0)  # lapsed at once: kept all the same
    await keyed_turn(any_store, session.id, 2, "key-2")

    kept = await any_store.keyed_writes(session.id, owner="o_alice")

    assert [(k.key, k.record) for k in kept] == [("key-2", b'{"turn": 2}'), ("key-1", b'{"turn": 1}')]
    assert kept[0].until - kept[1].until >= timedelta(seconds=599)
    assert await any_store.keyed_writes(session.id, owner="o_mallory") == ()
    assert await any_store.keyed_writes(make_session().id, owner="o_alice") == ()


async def test_a_deleted_session_forgets_its_keyed_turns(any_store: ActiveSessionStore) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await keyed_turn(any_store, session.id, 1, "key-1")
    assert isinstance(await any_store.delete(session.id, owner="o_alice"), Ok)
    await any_store.create(session, max_sessions_per_owner=LIMIT)  # the same id again

    begun = await any_store.begin_turn(
        session.id, owner="o_alice", token="t", lock_seconds=30, history_limit=0, key="key-1"
    )

    assert isinstance(begun, Ok) and begun.value.answered is None
