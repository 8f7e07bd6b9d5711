"""Message seqs: each stored message's place in the order of appends, which a deletion never shifts,
so a page read from a seq neither skips nor repeats a message across a deletion. Run on both
store adapters; sessions stored before seqs existed are written by hand into real Redis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from core.result import Err, Ok
from llm_backend.ports import TokenUsage
from sessions_app.domain import ChatMessage, Transcript
from sessions_app.errors import SessionNotFound
from sessions_app.stores import memory as memory_store
from sessions_app.stores import redis as redis_store
from sessions_app.stores.redis import RedisSessionStore
from tests.conftest import SessionStorePorts
from tests.factories import BASE_TIME, make_message, make_session, make_turn

LIMIT = 100


async def stored(store: SessionStorePorts, turns: int) -> str:
    """A new session of `turns` turns (two messages each), owned by o_alice."""
    session = make_session()
    await store.create(session, max_sessions_per_owner=LIMIT)
    for n in range(turns):
        assert isinstance(
            await store.begin_turn(session.id, owner="o_alice", token=f"t{n}", lock_seconds=30, history_limit=0), Ok
        )
        appended = await store.append_turn(
            session.id, owner="o_alice", token=f"t{n}", messages=make_turn(n), usage=TokenUsage(), at=BASE_TIME
        )
        assert isinstance(appended, Ok)
    return session.id


async def messages(
    store: SessionStorePorts | RedisSessionStore, session_id: str, **page: int
) -> tuple[ChatMessage, ...]:
    loaded = await store.load(session_id, owner="o_alice", **page)
    assert isinstance(loaded, Ok), loaded
    return loaded.value.messages


async def delete(store: SessionStorePorts | RedisSessionStore, session_id: str, message: ChatMessage) -> None:
    deleted = await store.delete_message(session_id, owner="o_alice", message_id=message.id, at=BASE_TIME)
    assert isinstance(deleted, Ok), deleted


async def test_seqs_rise_from_zero_and_a_deletion_shifts_none(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=3)
    before = await messages(any_store, session_id)
    assert [m.seq for m in before] == [0, 1, 2, 3, 4, 5]

    await delete(any_store, session_id, before[1])
    after = await messages(any_store, session_id)

    assert [m.seq for m in after] == [0, 2, 3, 4, 5]
    assert [m.id for m in after] == [m.id for m in before if m.seq != 1]


async def test_a_page_from_a_seq_neither_skips_nor_repeats_across_a_deletion(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=5)
    whole = await messages(any_store, session_id)
    first = await messages(any_store, session_id, from_seq=0, limit=4)
    cursor = first[-1].seq + 1  # type: ignore[operator]

    await delete(any_store, session_id, whole[0])  # before the cursor
    await delete(any_store, session_id, whole[2])
    second = await messages(any_store, session_id, from_seq=cursor, limit=4)

    assert [m.id for m in second] == [m.id for m in whole[4:8]]
    assert [m.seq for m in second] == [4, 5, 6, 7]


async def test_a_page_from_a_deleted_messages_seq_starts_at_the_next_one(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=3)
    whole = await messages(any_store, session_id)

    await delete(any_store, session_id, whole[3])  # the message the cursor points at
    await delete(any_store, session_id, whole[4])

    assert [m.id for m in await messages(any_store, session_id, from_seq=3, limit=2)] == [whole[5].id]
    assert [m.id for m in await messages(any_store, session_id, from_seq=3)] == [whole[5].id]
    assert await messages(any_store, session_id, from_seq=6, limit=5) == ()
    assert await messages(any_store, session_id, from_seq=999_999_999, limit=5) == ()


async def test_a_deleted_seq_is_never_given_again(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=1)
    newest = (await messages(any_store, session_id))[-1]
    await delete(any_store, session_id, newest)

    await any_store.begin_turn(session_id, owner="o_alice", token="t9", lock_seconds=30, history_limit=0)
    await any_store.append_turn(
        session_id, owner="o_alice", token="t9", messages=make_turn(9), usage=TokenUsage(), at=BASE_TIME
    )

    assert [m.seq for m in await messages(any_store, session_id)] == [0, 2, 3]
    session = await any_store.get(session_id, owner="o_alice")
    assert isinstance(session, Ok) and session.value.next_seq == 4 and session.value.message_count == 3


async def test_the_store_gives_the_seq_whatever_the_message_carries(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=1)
    forged = ChatMessage("m-forged", make_message("x").role, "x", BASE_TIME, seq=0)
    await any_store.begin_turn(session_id, owner="o_alice", token="t", lock_seconds=30, history_limit=0)
    await any_store.append_turn(
        session_id, owner="o_alice", token="t", messages=[forged], usage=TokenUsage(), at=BASE_TIME
    )

    assert [m.seq for m in await messages(any_store, session_id)] == [0, 1, 2]


async def test_another_owner_cannot_page_by_seq(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=1)

    loaded = await any_store.load(session_id, owner="o_mallory", from_seq=0, limit=5)

    assert isinstance(loaded, Err) and isinstance(loaded.error, SessionNotFound)


async def test_restore_keeps_the_seqs_and_the_next_one(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=2)
    await delete(any_store, session_id, (await messages(any_store, session_id))[-1])  # seq 3 is gone
    locked = await any_store.lock_for_archive(session_id, token="a", lock_seconds=30)
    assert isinstance(locked, Ok)
    assert await any_store.delete_locked(session_id, token="a")

    assert await any_store.restore(locked.value, max_sessions_per_owner=LIMIT) == Ok(True)

    assert [m.seq for m in await messages(any_store, session_id)] == [0, 1, 2]
    session = await any_store.get(session_id, owner="o_alice")
    assert isinstance(session, Ok) and session.value.next_seq == 4


async def test_restore_of_messages_without_seqs_gives_them_their_positions(any_store: SessionStorePorts) -> None:
    session = make_session(message_count=2)
    turn = make_turn(0)

    await any_store.restore(Transcript(session, turn), max_sessions_per_owner=LIMIT)

    assert [m.seq for m in await messages(any_store, session.id)] == [0, 1]
    got = await any_store.get(session.id, owner="o_alice")
    assert isinstance(got, Ok) and got.value.next_seq == 2


# -- deleted ids: a page after an item deleted since it was seen ------------------------------


async def test_a_deleted_message_keeps_its_seq_for_its_owner_only(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=3)
    whole = await messages(any_store, session_id)
    await delete(any_store, session_id, whole[3])
    await delete(any_store, session_id, whole[0])

    def seq(message_id: str, owner: str = "o_alice") -> Any:
        return any_store.deleted_message_seq(session_id, owner=owner, message_id=message_id)

    assert await seq(whole[3].id) == 3 and await seq(whole[0].id) == 0
    assert await seq(whole[1].id) is None  # kept, not deleted
    assert await seq("never-a-message") is None
    assert await seq(whole[3].id, owner="o_mallory") is None
    other = await stored(any_store, turns=1)
    assert await any_store.deleted_message_seq(other, owner="o_alice", message_id=whole[3].id) is None


async def test_only_the_newest_deletions_are_kept(
    any_store: SessionStorePorts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_store, "DELETED_IDS_KEPT", 2)
    monkeypatch.setattr(redis_store, "DELETED_IDS_KEPT", 2)
    session_id = await stored(any_store, turns=2)
    whole = await messages(any_store, session_id)
    for message in reversed(whole[:3]):  # seqs 2, 1, 0: the oldest deletion has the highest seq
        await delete(any_store, session_id, message)

    kept = [await any_store.deleted_message_seq(session_id, owner="o_alice", message_id=m.id) for m in whole[:3]]

    assert kept == [0, 1, None]


async def test_deleted_ids_go_with_the_session_and_with_an_archive_round_trip(any_store: SessionStorePorts) -> None:
    session_id = await stored(any_store, turns=2)
    whole = await messages(any_store, session_id)
    await delete(any_store, session_id, whole[1])
    locked = await any_store.lock_for_archive(session_id, token="a", lock_seconds=30)
    assert isinstance(locked, Ok) and await any_store.delete_locked(session_id, token="a")
    assert await any_store.restore(locked.value, max_sessions_per_owner=LIMIT) == Ok(True)

    assert await any_store.deleted_message_seq(session_id, owner="o_alice", message_id=whole[1].id) is None

    await delete(any_store, session_id, whole[2])
    assert await any_store.delete(session_id, owner="o_alice") == Ok(None)
    assert await any_store.restore(locked.value, max_sessions_per_owner=LIMIT) == Ok(True)
    assert await any_store.deleted_message_seq(session_id, owner="o_alice", message_id=whole[2].id) is None


async def test_the_deleted_ids_expire_with_the_session(redis_url: str, redis_prefix: str) -> None:
    store = RedisSessionStore(url=redis_url, prefix=redis_prefix, ttl_seconds=3600)
    client = redis.Redis.from_url(redis_url)
    try:
        session_id = await stored(store, turns=1)  # type: ignore[arg-type]
        base = f"{redis_prefix}:s:{{{session_id}}}"
        client.expire(f"{base}:m", 60)  # as if the session's last turn were long ago
        await delete(store, session_id, (await messages(store, session_id))[0])

        # Absolute expiry times: two PTTL reads a millisecond apart would differ by that millisecond.
        assert client.lrange(f"{base}:d", 0, -1)
        assert 0 < client.pexpiretime(f"{base}:d") <= client.pexpiretime(f"{base}:m")
        await store.delete(session_id, owner="o_alice")
        assert not client.exists(f"{base}:d")
    finally:
        client.close()
        await store.close()


# -- sessions stored before seqs existed (real Redis) -------------------------------------------


@pytest.fixture
def raw_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def store_legacy(raw: redis.Redis, prefix: str, turns: int) -> tuple[str, list[ChatMessage]]:
    """A session as the store wrote it before seqs: no `q` in its metadata, messages without a seq."""
    session = make_session(message_count=2 * turns)
    base = f"{prefix}:s:{{{session.id}}}"
    raw.hset(
        f"{base}:m",
        mapping={
            "o": session.owner,
            "s": session.status.value,
            "md": session.model,
            "sp": session.system_prompt,
            "mt": orjson.dumps(dict(session.metadata)),
            "ca": 1767268800000,
            "la": 1767268800000,
            "n": 2 * turns,
            "ti": 0,
            "to": 0,
        },
    )
    written = [m for n in range(turns) for m in make_turn(n)]
    for m in written:
        raw.rpush(f"{base}:l", orjson.dumps([m.id, m.role.value[0], 1767268800000, m.content]))
    raw.zadd(f"{prefix}:o:{{o_alice}}:i", {f"1767268800000:{session.id}": 0})
    return session.id, written


async def test_a_session_stored_before_seqs_pages_by_position(
    redis_store: RedisSessionStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    session_id, written = store_legacy(raw_redis, redis_prefix, turns=3)

    whole = await messages(redis_store, session_id)
    page = await messages(redis_store, session_id, from_seq=2, limit=2)

    assert [m.id for m in whole] == [m.id for m in written] and [m.seq for m in whole] == list(range(6))
    assert [m.id for m in page] == [written[2].id, written[3].id]
    session = await redis_store.get(session_id, owner="o_alice")
    assert isinstance(session, Ok) and session.value.next_seq == 6


async def test_a_deletion_in_a_session_stored_before_seqs_shifts_no_seq(
    redis_store: RedisSessionStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    session_id, written = store_legacy(raw_redis, redis_prefix, turns=3)
    first = await messages(redis_store, session_id, from_seq=0, limit=3)

    await delete(redis_store, session_id, written[0])
    second = await messages(redis_store, session_id, from_seq=first[-1].seq + 1, limit=3)  # type: ignore[operator]

    assert [m.id for m in second] == [m.id for m in written[3:6]]
    assert [m.seq for m in await messages(redis_store, session_id)] == [1, 2, 3, 4, 5]


async def test_a_turn_reads_the_history_of_a_session_stored_before_seqs(
    redis_store: RedisSessionStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    session_id, written = store_legacy(raw_redis, redis_prefix, turns=2)

    begun = await redis_store.begin_turn(session_id, owner="o_alice", token="t", lock_seconds=30, history_limit=3)

    assert isinstance(begun, Ok)
    assert [(m.role, m.content) for m in begun.value.messages] == [(m.role, m.content) for m in written[1:]]
    assert begun.value.last_message_id == written[-1].id


async def test_a_turn_on_a_session_stored_before_seqs_continues_its_positions(
    redis_store: RedisSessionStore, raw_redis: redis.Redis, redis_prefix: str
) -> None:
    session_id, written = store_legacy(raw_redis, redis_prefix, turns=2)
    await redis_store.begin_turn(session_id, owner="o_alice", token="t", lock_seconds=30, history_limit=0)
    await redis_store.append_turn(
        session_id, owner="o_alice", token="t", messages=make_turn(7), usage=TokenUsage(), at=BASE_TIME
    )

    await delete(redis_store, session_id, written[1])  # an old message, after the new ones

    assert [m.seq for m in await messages(redis_store, session_id)] == [0, 2, 3, 4, 5]
    tail = await messages(redis_store, session_id, from_seq=3, limit=5)
    assert [m.content for m in tail] == ["answer 1", "question 7", "answer 7"]
