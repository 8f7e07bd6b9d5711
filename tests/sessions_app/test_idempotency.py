"""Idempotency-Key: the first result, once, whatever the retries."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from core.errors import StoreUnavailable
from core.result import Err, Ok
from llm_backend.errors import BackendUnavailable
from llm_backend.fake import FakeChatBackend
from llm_backend.ports import Delta, Role
from sessions_app.domain import SessionStatus
from sessions_app.idempotency import (
    Claim,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IdempotencyStore,
    IdempotentRequest,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
)
from sessions_app.services import SessionManager
from sessions_app.stores.memory import InMemorySessionStore
from sessions_app.turn_stream import TurnDone
from sessions_app.turns import TurnRequest
from tests.redis_cluster import on_cluster_or
from tests.sessions_app.builders import fake_manager
from tests.support import RedisServer


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def idempotency(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield MemoryIdempotencyStore()
    else:
        url, prefix, cluster = on_cluster_or(request, redis_url, redis_prefix)
        store = RedisIdempotencyStore(url=url, prefix=prefix, cluster=cluster)
        yield store
        await store.close()


@pytest.fixture
def backend() -> FakeChatBackend:
    return FakeChatBackend()


@pytest.fixture
async def manager(backend: FakeChatBackend, idempotency: IdempotencyStore) -> SessionManager:
    return fake_manager(backend, idempotency=idempotency)


async def new_session(manager: SessionManager) -> str:
    created = await manager.session_create(owner="o_alice")
    assert isinstance(created, Ok)
    return created.value.id


def key(name: str, *parts: object) -> IdempotentRequest:
    request = IdempotentRequest.of(name, *parts)
    assert request is not None
    return request


async def test_a_repeated_turn_returns_the_first_answer_without_asking_again(
    manager: SessionManager, backend: FakeChatBackend
) -> None:
    session_id = await new_session(manager)
    request = key("k-1", "hello")

    first = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )
    again = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )

    assert isinstance(first, Ok) and isinstance(again, Ok)
    assert again.value.message == first.value.message and again.value.user_message == first.value.user_message
    assert again.value.usage == first.value.usage and again.value.finish_reason == first.value.finish_reason
    assert len(backend.requests) == 1
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and len(loaded.value.messages) == 2


async def test_the_same_key_with_another_request_is_refused(manager: SessionManager) -> None:
    session_id = await new_session(manager)
    await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=key("k", "hello"))
    )

    other = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="bye", idempotent=key("k", "bye"))
    )

    assert isinstance(other, Err) and isinstance(other.error, IdempotencyKeyReused) and other.error.status == 422


async def test_a_repeat_while_the_first_is_running_is_409(manager: SessionManager, backend: FakeChatBackend) -> None:
    session_id = await new_session(manager)
    backend.gate = asyncio.Event()
    first = asyncio.create_task(
        manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="hi", idempotent=key("k", "hi")))
    )
    async with asyncio.timeout(10):  # the first holds the key (the model is asked): a sleep raced it
        while not backend.requests:
            await asyncio.sleep(0.005)

    repeat = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hi", idempotent=key("k", "hi"))
    )
    backend.gate.set()

    assert isinstance(repeat, Err) and isinstance(repeat.error, IdempotencyInProgress) and repeat.error.status == 409
    assert isinstance(await first, Ok)


async def test_a_failed_first_attempt_can_be_retried_with_its_key(
    manager: SessionManager, backend: FakeChatBackend
) -> None:
    session_id = await new_session(manager)
    backend.fail_with = BackendUnavailable()
    failed = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hi", idempotent=key("k", "hi"))
    )
    backend.fail_with = None

    retried = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hi", idempotent=key("k", "hi"))
    )

    assert isinstance(failed, Err) and isinstance(retried, Ok)
    assert len(backend.requests) == 2


async def test_a_repeated_stream_replays_the_first_answer(manager: SessionManager, backend: FakeChatBackend) -> None:
    session_id = await new_session(manager)
    request = key("k", "tell me")
    first = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )
    assert isinstance(first, Ok)
    first_events = [e async for e in first.value.events()]

    again = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )
    as_json = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )

    assert isinstance(again, Ok) and isinstance(as_json, Ok)
    replayed = [e async for e in again.value.events()]
    assert [e.content for e in replayed if isinstance(e, Delta)] == ["Echo: tell me"]
    assert isinstance(replayed[-1], TurnDone) and isinstance(first_events[-1], TurnDone)
    assert replayed[-1].outcome.message == first_events[-1].outcome.message == as_json.value.message
    assert len(backend.requests) == 1


async def test_a_stream_broken_by_an_unexpected_error_settles_its_key(
    manager: SessionManager, backend: FakeChatBackend
) -> None:
    session_id = await new_session(manager)
    request = key("k", "tell me")
    backend.fail_with, backend.fail_after = RuntimeError("not a BackendError"), 2
    first = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )
    assert isinstance(first, Ok)
    with pytest.raises(RuntimeError):
        async for _ in first.value.events():
            pass
    backend.fail_with = None

    again = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )

    # Not 409 for a key left pending: a cut-short turn's key is released, so the retry runs.
    assert isinstance(again, Ok), again
    assert again.value.message.content == "Echo: tell me"
    assert len(backend.requests) == 2


async def test_a_repeated_session_creation_returns_the_first_session(manager: SessionManager) -> None:
    request = key("create-1", {"model": "echo"})

    first = await manager.session_create(owner="o_alice", idempotent=request)
    again = await manager.session_create(owner="o_alice", idempotent=request)

    assert isinstance(first, Ok) and isinstance(again, Ok) and again.value.id == first.value.id
    page = await manager.session_list(owner="o_alice", limit=10)
    assert isinstance(page, Ok) and len(page.value.sessions) == 1


async def test_a_repeated_creation_finds_its_session_after_it_was_archived(manager: SessionManager) -> None:
    request = key("create-2", {})
    first = await manager.session_create(owner="o_alice", idempotent=request)
    assert isinstance(first, Ok)
    ended = await manager.session_end(owner="o_alice", session_id=first.value.id)
    assert isinstance(ended, Ok) and ended.value.status == SessionStatus.ARCHIVED

    again = await manager.session_create(owner="o_alice", idempotent=request)

    assert isinstance(again, Ok) and again.value.id == first.value.id
    assert again.value.status == SessionStatus.ARCHIVED


async def test_a_pending_claim_lapses_so_a_crash_does_not_block_the_key(idempotency: IdempotencyStore) -> None:
    assert (await idempotency.claim("o", key("k", "x"), pending_seconds=1))[0] == Claim.NEW
    assert (await idempotency.claim("o", key("k", "x"), pending_seconds=1))[0] == Claim.PENDING

    await asyncio.sleep(1.1)

    assert (await idempotency.claim("o", key("k", "x"), pending_seconds=1))[0] == Claim.NEW


async def test_a_claim_resent_after_its_reply_was_lost_finds_its_own(idempotency: IdempotencyStore) -> None:
    request = key("k", "x")
    assert (await idempotency.claim("o", request, pending_seconds=60))[0] == Claim.NEW

    # redis-py resends a script whose connection failed before its reply: the request is let run.
    assert (await idempotency.claim("o", request, pending_seconds=60))[0] == Claim.NEW
    assert (await idempotency.claim("o", key("k", "x"), pending_seconds=60))[0] == Claim.PENDING
    await idempotency.complete("o", request, {"session_id": "s"}, ttl=60)
    assert await idempotency.claim("o", request, pending_seconds=60) == (Claim.DONE, {"session_id": "s"})


class ClaimAnswerLost:
    """An idempotency store whose next claim is taken but reported failed, as when the connection
    closes after the claim's script ran (a cluster client reloading its slot map closes every
    node's connections)."""

    def __init__(self, store: IdempotencyStore) -> None:
        self._store = store
        self.lose_next_answer = True

    async def claim(
        self, owner: str, request: IdempotentRequest, *, pending_seconds: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        claimed = await self._store.claim(owner, request, pending_seconds=pending_seconds)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise StoreUnavailable()
        return claimed

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        await self._store.complete(owner, request, result, ttl=ttl)

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        await self._store.release(owner, request)

    async def forget(self, owner: str) -> None:
        await self._store.forget(owner)

    async def forget_session(self, owner: str, session_id: str) -> None:
        await self._store.forget_session(owner, session_id)

    async def describe(self, owner: str) -> list[dict[str, Any]]:
        return await self._store.describe(owner)


async def test_a_claim_whose_answer_was_lost_leaves_the_key_free_for_the_retry(
    backend: FakeChatBackend, idempotency: IdempotencyStore
) -> None:
    manager = fake_manager(backend, idempotency=ClaimAnswerLost(idempotency))
    session_id = await new_session(manager)

    failed = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hi", idempotent=key("k", "hi"))
    )
    retried = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hi", idempotent=key("k", "hi"))
    )

    assert isinstance(failed, Err) and isinstance(failed.error, StoreUnavailable)  # a 503: the client retries
    # Not 409 until the claim lapses: nothing runs under it.
    assert isinstance(retried, Ok), retried
    assert len(backend.requests) == 1


async def test_a_late_release_leaves_another_requests_claim(idempotency: IdempotencyStore) -> None:
    first, retry = key("k", "x"), key("k", "x")
    assert (await idempotency.claim("o", first, pending_seconds=60))[0] == Claim.NEW
    await idempotency.forget("o")  # lost (a failover), or lapsed: the retry claims the key anew
    assert (await idempotency.claim("o", retry, pending_seconds=60))[0] == Claim.NEW

    await idempotency.release("o", first)  # the first request's release, come late

    assert (await idempotency.claim("o", key("k", "x"), pending_seconds=60))[0] == Claim.PENDING
    await idempotency.release("o", retry)
    assert (await idempotency.claim("o", key("k", "x"), pending_seconds=60))[0] == Claim.NEW


async def test_a_release_never_drops_a_result(idempotency: IdempotencyStore) -> None:
    request = key("k", "x")
    await idempotency.claim("o", request, pending_seconds=60)
    await idempotency.complete("o", request, {"session_id": "s"}, ttl=60)

    await idempotency.release("o", request)

    assert await idempotency.claim("o", key("k", "x"), pending_seconds=60) == (Claim.DONE, {"session_id": "s"})


async def test_a_released_claim_leaves_no_index_entry(redis_url: str, redis_prefix: str) -> None:
    store = RedisIdempotencyStore(url=redis_url, prefix=redis_prefix)
    kept, released = key("kept", "x"), key("released", "x")
    client = Redis.from_url(redis_url)
    index = f"{redis_prefix}:o:{{o}}:idemidx"
    try:
        await store.claim("o", kept, pending_seconds=60)
        await store.claim("o", released, pending_seconds=60)

        await store.release("o", released)

        assert await client.zrange(index, 0, -1) == [kept.key_id.encode()]
        assert not await client.exists(f"{redis_prefix}:o:{{o}}:idem:{released.key_id}")
    finally:
        await client.delete(index, f"{redis_prefix}:o:{{o}}:idem:{kept.key_id}")
        await client.aclose()
        await store.close()


async def test_a_claim_written_before_claims_had_owners_is_left_to_lapse(redis_url: str, redis_prefix: str) -> None:
    store = RedisIdempotencyStore(url=redis_url, prefix=redis_prefix)
    request = key("k", "x")
    client = Redis.from_url(redis_url)
    try:
        # As the previous version wrote it (a rolling deploy): no `by`.
        old = orjson.dumps({"fp": request.fingerprint, "state": "pending"})
        await client.set(f"{redis_prefix}:o:{{o}}:idem:{request.key_id}", old, ex=60)

        await store.release("o", request)

        assert (await store.claim("o", request, pending_seconds=60))[0] == Claim.PENDING
        assert 0 < await client.ttl(f"{redis_prefix}:o:{{o}}:idem:{request.key_id}") <= 60
    finally:
        await client.aclose()
        await store.close()


async def test_keys_belong_to_their_owner_and_are_forgotten_with_them(idempotency: IdempotencyStore) -> None:
    request = key("k", "x")
    await idempotency.claim("o_alice", request, pending_seconds=60)
    await idempotency.complete("o_alice", request, {"session_id": "s"}, ttl=60)

    assert (await idempotency.claim("o_bob", request, pending_seconds=60))[0] == Claim.NEW
    assert await idempotency.claim("o_alice", request, pending_seconds=60) == (Claim.DONE, {"session_id": "s"})
    await idempotency.forget("o_alice")
    assert (await idempotency.claim("o_alice", request, pending_seconds=60))[0] == Claim.NEW


def test_the_fingerprint_is_keyed_so_a_stored_one_cannot_confirm_a_guessed_message(settings: Any) -> None:
    parts = ("turn", "s", "my secret message")
    bare = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()

    fingerprint = key("k", *parts).fingerprint
    settings.IDEMPOTENCY_SECRET = "another-secret-entirely"
    other = key("k", *parts).fingerprint

    assert fingerprint != bare and other != bare and other != fingerprint
    assert key("k", *parts).fingerprint == other  # stable under one secret: repeats still match


async def test_deleting_a_session_forgets_the_records_that_name_it(
    manager: SessionManager, idempotency: IdempotencyStore
) -> None:
    created = key("c-1", "create")
    first = await manager.session_create(owner="o_alice", idempotent=created)
    assert isinstance(first, Ok)
    turn = key("t-1", "hello")
    await manager.turn_send(TurnRequest(owner="o_alice", session_id=first.value.id, content="hello", idempotent=turn))
    other = await new_session(manager)
    kept = key("t-2", "hi")
    await manager.turn_send(TurnRequest(owner="o_alice", session_id=other, content="hi", idempotent=kept))

    assert isinstance(await manager.session_delete(owner="o_alice", session_id=first.value.id), Ok)

    assert (await idempotency.claim("o_alice", created, pending_seconds=60))[0] == Claim.NEW
    assert (await idempotency.claim("o_alice", turn, pending_seconds=60))[0] == Claim.NEW
    assert (await idempotency.claim("o_alice", kept, pending_seconds=60))[0] == Claim.DONE


async def test_an_owners_records_are_described_without_their_fingerprints(idempotency: IdempotencyStore) -> None:
    done, pending = key("k-1", "hello"), key("k-2", "bye")
    await idempotency.claim("o_alice", done, pending_seconds=60)
    await idempotency.complete("o_alice", done, {"session_id": "s1", "message_id": "m1"}, ttl=600)
    await idempotency.claim("o_alice", pending, pending_seconds=60)
    await idempotency.claim("o_bob", key("k-3", "x"), pending_seconds=60)

    described = sorted(await idempotency.describe("o_alice"), key=lambda r: r["state"])

    assert [(r["state"], r["result"]) for r in described] == [
        ("done", {"session_id": "s1", "message_id": "m1"}),
        ("pending", None),
    ]
    assert 500 < described[0]["expires_in_seconds"] <= 600 and 0 < described[1]["expires_in_seconds"] <= 60
    assert done.fingerprint not in str(described) and "k-1" not in str(described)
    await idempotency.forget("o_alice")
    assert await idempotency.describe("o_alice") == []


def test_keys_must_be_printable_ascii() -> None:
    from core.errors import InvalidRequest

    assert IdempotentRequest.of(None) is None
    for bad in ("", "has space", "x" * 256, "é"):
        with pytest.raises(InvalidRequest):
            IdempotentRequest.of(bad)


async def test_a_result_recorded_during_an_outage_is_kept_once_redis_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    store = RedisIdempotencyStore(url=server.url, prefix="gwtest:idem-outage")
    request = key("k-outage", "a turn")
    assert await store.claim("o_alice", request, pending_seconds=60) == (Claim.NEW, None)
    try:
        server.stop()
        await store.complete("o_alice", request, {"session_id": "s1"}, ttl=600)  # no error: deferred
        server.start()

        repeat = key("k-outage", "a turn")  # the client's retry: another request with the key
        async with asyncio.timeout(20):
            while (answer := await store.claim("o_alice", repeat, pending_seconds=60))[0] == Claim.PENDING:
                await asyncio.sleep(0.1)  # a repeat meanwhile is told it is in progress
        assert answer == (Claim.DONE, {"session_id": "s1"})
    finally:
        await store.close()
        server.stop()


# On a Redis Cluster a turn's commit (its session's slot) and its Idempotency-Key record (its
# owner's slot) live on different masters, replicated asynchronously. A failover of the key's
# master can lose the record (its claim, its completion) while the session's master keeps the
# turn: the session itself must then know the key, or the client's retry runs the turn again.


class CommitAnsweredLost(InMemorySessionStore):
    """A store whose next commit is stored but reported failed, as when its master dies after
    running the append and its promoted replica holds it, past the commit's resend window."""

    lose_next_answer = True

    async def append_turn(self, *args: Any, **kwargs: Any) -> Any:
        appended = await super().append_turn(*args, **kwargs)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise StoreUnavailable()
        return appended


async def test_a_turn_whose_key_record_a_failover_lost_is_replayed_not_run_again(
    manager: SessionManager, backend: FakeChatBackend, idempotency: IdempotencyStore
) -> None:
    session_id = await new_session(manager)
    request = key("k-lost", "hello")
    first = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )
    await idempotency.forget("o_alice")  # the key's master failed over before replicating its records

    again = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )
    streamed = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )

    assert isinstance(first, Ok) and isinstance(again, Ok) and isinstance(streamed, Ok)
    assert again.value.message == first.value.message and again.value.user_message == first.value.user_message
    assert again.value.usage == first.value.usage and again.value.finish_reason == first.value.finish_reason
    events = [e async for e in streamed.value.events()]
    assert isinstance(events[-1], TurnDone) and events[-1].outcome.message == first.value.message
    assert len(backend.requests) == 1
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and len(loaded.value.messages) == 2
    # The key's record is written back: the next repeat is answered from it.
    assert (await idempotency.claim("o_alice", request, pending_seconds=60))[0] == Claim.DONE


async def test_a_streamed_turn_whose_key_record_was_lost_is_replayed(
    manager: SessionManager, backend: FakeChatBackend, idempotency: IdempotencyStore
) -> None:
    session_id = await new_session(manager)
    request = key("k-lost-stream", "tell me")
    first = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )
    assert isinstance(first, Ok)
    done = [e async for e in first.value.events()][-1]
    assert isinstance(done, TurnDone)
    await idempotency.forget("o_alice")

    again = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me", idempotent=request)
    )

    assert isinstance(again, Ok)
    replayed = [e async for e in again.value.events()]
    assert [e.content for e in replayed if isinstance(e, Delta)] == ["Echo: tell me"]
    assert isinstance(replayed[-1], TurnDone) and replayed[-1].outcome.message == done.outcome.message
    assert len(backend.requests) == 1


async def test_a_lost_key_record_reused_with_another_request_is_still_refused(
    manager: SessionManager, idempotency: IdempotencyStore
) -> None:
    session_id = await new_session(manager)
    await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=key("k", "hello"))
    )
    await idempotency.forget("o_alice")

    other = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="bye", idempotent=key("k", "bye"))
    )

    assert isinstance(other, Err) and isinstance(other.error, IdempotencyKeyReused)
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and len(loaded.value.messages) == 2


async def test_a_turn_stored_but_reported_failed_is_not_stored_twice_by_its_retry(
    backend: FakeChatBackend, idempotency: IdempotencyStore
) -> None:
    store = CommitAnsweredLost()
    manager = fake_manager(backend, store=store, idempotency=idempotency)
    session_id = await new_session(manager)
    request = key("k-unknown", "hello")

    failed = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )
    retried = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request)
    )

    assert isinstance(failed, Err) and isinstance(failed.error, StoreUnavailable)  # a 503: the client retries
    assert isinstance(retried, Ok)
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and [m.id for m in loaded.value.messages] == [
        retried.value.user_message.id,
        retried.value.message.id,
    ]
    assert len(backend.requests) == 1


async def test_a_cut_short_stream_is_not_remembered_so_its_retry_runs(
    manager: SessionManager, backend: FakeChatBackend, idempotency: IdempotencyStore
) -> None:
    session_id = await new_session(manager)
    request = key("k-cut", "tell me a long story")
    backend.pause_after = 1
    first = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me a long story", idempotent=request)
    )
    assert isinstance(first, Ok)
    events = first.value.events()
    await anext(events)
    await events.aclose()  # the client left: what was sent is stored, cut short, and the key released
    backend.pause_after = None
    await idempotency.forget("o_alice")

    again = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="tell me a long story", idempotent=request)
    )

    assert isinstance(again, Ok) and again.value.finish_reason is not None
    assert len(backend.requests) == 2


async def test_appended_messages_whose_key_record_was_lost_are_not_appended_twice(
    manager: SessionManager, idempotency: IdempotencyStore
) -> None:
    session_id = await new_session(manager)
    request = key("k-append", "items")
    first = await manager.edits.messages_append(
        owner="o_alice", session_id=session_id, messages=[(Role.USER, "a note")], idempotent=request
    )
    await idempotency.forget("o_alice")

    again = await manager.edits.messages_append(
        owner="o_alice", session_id=session_id, messages=[(Role.USER, "a note")], idempotent=request
    )

    assert isinstance(first, Ok) and isinstance(again, Ok) and again.value == first.value
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and len(loaded.value.messages) == 1


class CompletionNeverWritten(MemoryIdempotencyStore):
    """The key's completion never written: the gateway process died between storing the turn and
    completing its key (or a failover lost the completion but kept the claim)."""

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        return None


async def test_a_turn_stored_by_a_process_that_died_before_completing_its_key_is_replayed(
    backend: FakeChatBackend,
) -> None:
    manager = fake_manager(backend, idempotency=CompletionNeverWritten())
    session_id = await new_session(manager)

    def request() -> IdempotentRequest:  # each attempt its own request, as each HTTP request is
        return key("k-died", "hello")

    first = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request())
    )

    again = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request())
    )
    streamed = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="hello", idempotent=request())
    )

    assert isinstance(first, Ok) and isinstance(again, Ok) and isinstance(streamed, Ok)
    assert again.value.message == first.value.message  # not 409 until the claim lapses
    events = [e async for e in streamed.value.events()]
    assert isinstance(events[-1], TurnDone) and events[-1].outcome.message == first.value.message
    assert len(backend.requests) == 1
