"""The `ArchiverSessionStore` contract (what the archiver and the sweeper use of the active store),
run against the in-memory and the Redis adapter alike, each set up through its `ActiveSessionStore`."""

from __future__ import annotations

from datetime import timedelta

from core.result import Err, Ok
from sessions_app.domain import SessionStatus, Transcript
from sessions_app.errors import SessionLimitReached, TurnInProgress
from tests.conftest import SessionStorePorts
from tests.factories import BASE_TIME, make_session
from tests.sessions_app.test_stores import LIMIT, begin, run_turn


async def test_list_idle_finds_sessions_quiet_since_before_a_time(any_store: SessionStorePorts) -> None:
    old = make_session(minutes=0)
    recent = make_session(minutes=60)
    for session in (old, recent):
        await any_store.create(session, max_sessions_per_owner=LIMIT)

    assert await any_store.list_idle(before=BASE_TIME + timedelta(minutes=30), limit=10) == [old.id]
    assert set(await any_store.list_idle(before=BASE_TIME + timedelta(hours=2), limit=10)) == {old.id, recent.id}


async def test_count_idle_counts_sessions_quiet_since_before_a_time(any_store: SessionStorePorts) -> None:
    for minutes in (0, 10, 60):
        await any_store.create(make_session(minutes=minutes), max_sessions_per_owner=LIMIT)

    assert await any_store.count_idle(before=BASE_TIME) == 0
    assert await any_store.count_idle(before=BASE_TIME + timedelta(minutes=30)) == 2
    assert await any_store.count_idle(before=BASE_TIME + timedelta(days=1)) == 3


async def test_the_archiver_locks_any_session_and_deletes_only_with_its_lock(any_store: SessionStorePorts) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await run_turn(any_store, session.id, 1)
    await any_store.set_status(session.id, owner="o_alice", status=SessionStatus.ENDED, at=BASE_TIME)

    locked = await any_store.lock_for_archive(session.id, token="arch", lock_seconds=30)

    assert isinstance(locked, Ok)
    assert locked.value.session.status == SessionStatus.ENDED and len(locked.value.messages) == 2
    assert isinstance((await any_store.lock_for_archive(session.id, token="other", lock_seconds=30)), Err)
    assert await any_store.delete_locked(session.id, token="other") is False
    assert isinstance(await any_store.load(session.id, owner="o_alice"), Ok)

    assert await any_store.delete_locked(session.id, token="arch") is True
    assert isinstance(await any_store.load(session.id, owner="o_alice"), Err)
    assert (await any_store.list_by_owner("o_alice", limit=10, cursor=None)).sessions == ()
    assert await any_store.list_idle(before=BASE_TIME + timedelta(days=1), limit=10) == []


async def test_the_archiver_waits_for_a_running_turn(any_store: SessionStorePorts) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await begin(any_store, session.id, token="turn")

    refused = await any_store.lock_for_archive(session.id, token="arch", lock_seconds=30)

    assert isinstance(refused, Err) and isinstance(refused.error, TurnInProgress)


async def test_restore_puts_a_whole_session_back_once(any_store: SessionStorePorts) -> None:
    session = make_session()
    await any_store.create(session, max_sessions_per_owner=LIMIT)
    await run_turn(any_store, session.id, 1)
    original = await any_store.load(session.id, owner="o_alice")
    assert isinstance(original, Ok)
    await any_store.delete(session.id, owner="o_alice")

    first = await any_store.restore(original.value, max_sessions_per_owner=LIMIT)
    again = await any_store.restore(original.value, max_sessions_per_owner=LIMIT)

    assert first == Ok(True) and again == Ok(False)
    restored = await any_store.load(session.id, owner="o_alice")
    assert isinstance(restored, Ok) and restored.value == original.value
    assert [s.id for s in (await any_store.list_by_owner("o_alice", limit=10, cursor=None)).sessions] == [session.id]
    await run_turn(any_store, session.id, 2)  # it takes turns again


async def test_restore_respects_the_per_owner_cap(any_store: SessionStorePorts) -> None:
    kept, restored = make_session(minutes=0), make_session(minutes=1)
    await any_store.create(kept, max_sessions_per_owner=1)

    result = await any_store.restore(Transcript(restored, ()), max_sessions_per_owner=1)

    assert isinstance(result, Err) and isinstance(result.error, SessionLimitReached)
