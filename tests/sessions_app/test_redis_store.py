"""What only the Redis adapter promises: cluster-safe keys, TTL safety nets, recovery, atomicity."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from core.errors import StoreUnavailable
from core.result import Err, Ok
from llm_backend.fake import FakeChatBackend
from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import TokenUsage
from sessions_app.domain import Role, Transcript
from sessions_app.errors import TurnInProgress
from sessions_app.fake_archive import InMemorySessionArchive
from sessions_app.recording import MemoryRecorder
from sessions_app.services import SessionManager, SessionPolicy
from sessions_app.stores.redis import RedisSessionStore
from sessions_app.turns import TurnRequest
from tests.factories import BASE_TIME, make_session, make_turn
from tests.support import RedisServer, free_port


def keys_of(redis_url: str, prefix: str) -> dict[str, int]:
    """Every key under `prefix` with its TTL in seconds."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {key: client.ttl(key) for key in client.scan_iter(match=f"{prefix}:*")}
    finally:
        client.close()


async def test_a_sessions_keys_share_one_hash_tag_and_carry_a_ttl(
    redis_store: RedisSessionStore, redis_url: str, redis_prefix: str
) -> None:
    session = make_session()
    await redis_store.create(session, max_sessions_per_owner=10)
    await redis_store.begin_turn(session.id, owner="o_alice", token="t", lock_seconds=30, history_limit=10)
    await redis_store.append_turn(
        session.id, owner="o_alice", token="t", messages=make_turn(1), usage=TokenUsage(), at=BASE_TIME
    )

    keys = keys_of(redis_url, redis_prefix)
    session_keys = [k for k in keys if session.id in k and ":s:" in k]
    assert len(session_keys) == 2  # metadata and messages; the lock is gone
    assert {re.search(r"\{(.*?)\}", k).group(1) for k in session_keys} == {session.id}  # type: ignore[union-attr]
    for key, ttl in keys.items():
        if "{activity}" not in key:
            assert 0 < ttl <= 3600, key


async def test_a_lost_script_cache_is_reloaded(redis_store: RedisSessionStore, redis_url: str) -> None:
    session = make_session()
    await redis_store.create(session, max_sessions_per_owner=10)
    await redis_store.begin_turn(session.id, owner="o_alice", token="t", lock_seconds=30, history_limit=10)
    redis.Redis.from_url(redis_url).script_flush()  # as after a Redis restart

    result = await redis_store.append_turn(
        session.id, owner="o_alice", token="t", messages=make_turn(1), usage=TokenUsage(1, 1), at=BASE_TIME
    )

    assert isinstance(result, Ok) and result.value.message_count == 2


async def test_a_replayed_append_after_a_lost_reply_is_not_applied_twice(redis_store: RedisSessionStore) -> None:
    session = make_session()
    await redis_store.create(session, max_sessions_per_owner=10)
    await redis_store.begin_turn(session.id, owner="o_alice", token="t", lock_seconds=30, history_limit=10)
    turn = make_turn(1)

    first = await redis_store.append_turn(
        session.id, owner="o_alice", token="t", messages=turn, usage=TokenUsage(1, 1), at=BASE_TIME
    )
    replay = await redis_store.append_turn(
        session.id, owner="o_alice", token="t", messages=turn, usage=TokenUsage(1, 1), at=BASE_TIME
    )

    assert isinstance(first, Ok) and isinstance(replay, Ok)
    loaded = await redis_store.load(session.id, owner="o_alice")
    assert isinstance(loaded, Ok) and len(loaded.value.messages) == 2


class LockReplyLost:
    """The Redis store, but `begin_turn`'s reply is lost after Redis ran it: the lock is taken,
    the caller sees the store unavailable (redis-py's cluster client, reloading the slot map
    after a master died, closes every node's connections, commands in flight on them too)."""

    def __init__(self, store: RedisSessionStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def begin_turn(self, session_id: str, **kwargs: Any) -> Any:
        await self._store.begin_turn(session_id, **kwargs)
        raise StoreUnavailable()


async def test_a_turn_whose_lock_was_taken_unanswered_leaves_the_session_free(redis_store: RedisSessionStore) -> None:
    def manager(store: Any) -> SessionManager:
        return SessionManager(
            store=store,
            backend=FakeChatBackend(),
            recorder=MemoryRecorder(),
            archive=InMemorySessionArchive(store),
            policy=SessionPolicy(),
        )

    created = await manager(redis_store).session_create(owner="o_alice")
    assert isinstance(created, Ok)

    lost = await manager(LockReplyLost(redis_store)).turn_send(
        TurnRequest(owner="o_alice", session_id=created.value.id, content="hi")
    )
    assert isinstance(lost, Err) and isinstance(lost.error, StoreUnavailable)

    # The retry runs now, not once the lock lapsed (TURN_LOCK_SECONDS).
    retried = await manager(redis_store).turn_send(
        TurnRequest(owner="o_alice", session_id=created.value.id, content="hi")
    )
    assert isinstance(retried, Ok) and retried.value.session.message_count == 2


async def test_index_entries_of_vanished_sessions_do_not_count_against_the_cap(
    redis_store: RedisSessionStore, redis_url: str, redis_prefix: str
) -> None:
    gone, new = make_session(minutes=0), make_session(minutes=1)
    await redis_store.create(gone, max_sessions_per_owner=1)
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{redis_prefix}:s:{{{gone.id}}}:m")  # as if its TTL ran out

    assert await redis_store.create(new, max_sessions_per_owner=1) == Ok(None)
    page = await redis_store.list_by_owner("o_alice", limit=10, cursor=None)
    assert [s.id for s in page.sessions] == [new.id]


async def test_a_page_skips_and_unindexes_sessions_that_vanished_among_the_live_ones(
    redis_store: RedisSessionStore, redis_url: str, redis_prefix: str
) -> None:
    sessions = [make_session(minutes=n) for n in range(12)]
    for session in sessions:
        await redis_store.create(session, max_sessions_per_owner=100)
    vanished = sessions[1::3]
    client = redis.Redis.from_url(redis_url)
    for session in vanished:
        client.delete(f"{redis_prefix}:s:{{{session.id}}}:m")  # as if its TTL ran out

    page = await redis_store.list_by_owner("o_alice", limit=100, cursor=None)

    live = [s for s in sessions if s not in vanished]
    assert page.sessions == tuple(reversed(live))
    assert client.zcard(f"{redis_prefix}:o:{{o_alice}}:i") == len(live)


async def test_list_idle_drops_index_entries_of_vanished_sessions_and_finds_the_live_ones_behind(
    redis_store: RedisSessionStore, redis_url: str, redis_prefix: str
) -> None:
    vanished = [make_session(minutes=n) for n in range(7)]  # the oldest: ahead of the live ones
    live = [make_session(minutes=10 + n) for n in range(2)]
    for session in vanished + live:
        await redis_store.create(session, max_sessions_per_owner=100)
    client = redis.Redis.from_url(redis_url)
    for session in vanished:
        client.delete(f"{redis_prefix}:s:{{{session.id}}}:m")  # as if its TTL ran out
    before = BASE_TIME + timedelta(days=1)
    assert await redis_store.count_idle(before=before) == 9

    assert await redis_store.list_idle(before=before, limit=3) == [s.id for s in live]
    assert await redis_store.count_idle(before=before) == 2  # the vanished ones' entries are gone
    assert client.zcard(f"{redis_prefix}:{{activity}}") == 2


async def test_an_entry_found_stale_is_kept_when_its_session_appears_meanwhile(
    redis_store: RedisSessionStore,
) -> None:
    # The check saw no session, then a create (or restore) wrote it before the entry was removed.
    session = make_session()
    await redis_store.create(session, max_sessions_per_owner=10)

    await redis_store._activity._drop([session.id])

    assert await redis_store.list_idle(before=BASE_TIME + timedelta(days=1), limit=10) == [session.id]


async def test_sessions_restored_while_their_stale_entries_are_dropped_stay_in_the_index(
    redis_store: RedisSessionStore, redis_url: str, redis_prefix: str
) -> None:
    sessions = [make_session(minutes=n) for n in range(40)]
    for session in sessions:
        await redis_store.create(session, max_sessions_per_owner=100)
    client = redis.Redis.from_url(redis_url)
    for session in sessions:  # each vanished, its index entry left behind
        client.delete(f"{redis_prefix}:s:{{{session.id}}}:m")
    before = BASE_TIME + timedelta(days=1)

    async def restore_all() -> None:
        for session in sessions:
            assert isinstance(await redis_store.restore(Transcript(session, ()), max_sessions_per_owner=100), Ok)
            await asyncio.sleep(0)

    async def sweep() -> None:
        for _ in range(40):
            await redis_store.list_idle(before=before, limit=5)

    await asyncio.gather(restore_all(), sweep(), sweep())

    indexed = {m.decode() for m in client.zrange(f"{redis_prefix}:{{activity}}", 0, -1)}
    assert indexed == {s.id for s in sessions}
    assert await redis_store.list_idle(before=before, limit=100) == [s.id for s in sessions]


async def test_unreachable_redis_is_store_unavailable() -> None:
    store = RedisSessionStore(url=f"redis://127.0.0.1:{free_port()}/0", prefix="gwtest:down", retries=1)
    with pytest.raises(StoreUnavailable):
        await store.create(make_session(), max_sessions_per_owner=10)
    await store.close()


async def test_concurrent_turns_never_lose_or_interleave_messages(
    redis_store: RedisSessionStore, echo_server: str
) -> None:
    """Many clients hammer one session through the real service, Redis and gRPC server.

    Exactly one turn runs at a time; every accepted turn stores its question
    directly followed by its own answer; refused turns store nothing.
    """
    backend = GrpcChatBackend(target=echo_server, timeout=10)
    manager = SessionManager(
        store=redis_store,
        backend=backend,
        recorder=MemoryRecorder(),
        archive=InMemorySessionArchive(redis_store),
        policy=SessionPolicy(max_messages_per_session=10_000),
    )
    created = await manager.session_create(owner="o_alice")
    assert isinstance(created, Ok)
    session_id = created.value.id
    accepted: list[str] = []
    refused = 0

    async def client(n: int) -> None:
        nonlocal refused
        for i in range(15):
            result = await manager.turn_send(
                TurnRequest(owner="o_alice", session_id=session_id, content=f"client {n} says {i}")
            )
            if isinstance(result, Ok):
                accepted.append(result.value.user_message.content)
            else:
                assert isinstance(result, Err) and isinstance(result.error, TurnInProgress)
                refused += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(client(n) for n in range(8)))
    await backend.close()

    loaded = await redis_store.load(session_id, owner="o_alice")
    assert isinstance(loaded, Ok)
    messages = loaded.value.messages
    assert len(messages) == 2 * len(accepted) == loaded.value.session.message_count
    assert refused > 0 and accepted
    for question, answer in zip(messages[::2], messages[1::2], strict=True):
        assert question.role == Role.USER and answer.role == Role.ASSISTANT
        assert answer.content == f"Echo: {question.content}"
    assert sorted(m.content for m in messages[::2]) == sorted(accepted)


async def test_a_lock_release_during_an_outage_happens_once_redis_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    store = RedisSessionStore(url=server.url, prefix="gwtest:outage", retries=1, socket_timeout=1)
    session = make_session()
    await store.create(session, max_sessions_per_owner=10)
    begun = await store.begin_turn(session.id, owner=session.owner, token="t1", lock_seconds=300, history_limit=10)
    assert isinstance(begun, Ok)
    try:
        server.stop()
        await store.release_turn(session.id, token="t1")  # no error: it is deferred
        server.start()

        async with asyncio.timeout(20):
            while True:
                again = await store.begin_turn(
                    session.id, owner=session.owner, token="t2", lock_seconds=300, history_limit=10
                )
                if isinstance(again, Ok):
                    break
                assert isinstance(again.error, TurnInProgress)  # locked until the deferred release runs
                await asyncio.sleep(0.1)
    finally:
        await store.close()
        server.stop()
