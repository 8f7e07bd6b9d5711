"""An owner's export and erasure, across Redis, Azurite and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from archive.crypto import UnreadableArchive
from archive.errors import ArchiveUnreadable
from archive.keys import KeyRing
from archive.privacy import PrivacyService
from archive.services import ArchiveService
from archive.stores.azure_blob import AzureBlobArchiveStore
from archive.stores.memory import InMemoryArchiveStore
from audit.models import AuditEvent
from core.result import Err, Ok, unwrap
from limits.memory import MemoryLimiter
from llm_backend.fake import FakeChatBackend
from sessions_app.domain import TurnOutcome
from sessions_app.idempotency import Claim, IdempotentRequest, MemoryIdempotencyStore
from sessions_app.models import SessionRecord
from sessions_app.recording import DatabaseRecorder
from sessions_app.services import SessionManager, SessionPolicy, utc_now_ms_precision
from sessions_app.stores.redis import RedisSessionStore
from sessions_app.turns import TurnRequest
from tests.archive.test_services import CANARY, manager_for, session_with_turns
from tests.conftest import SessionStorePorts
from tests.redis_cluster import RedisClusterNodes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def privacy(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing, service: ArchiveService
) -> PrivacyService:
    return PrivacyService(
        active=redis_store,
        archive=blob_store,
        archive_service=service,
        keys=keys,
        clock=utc_now_ms_precision,
        forget=(idempotency.forget, limiter.forget),
    )


idempotency = MemoryIdempotencyStore()
limiter = MemoryLimiter(requests_per_minute=1)


async def two_sessions(
    redis_store: RedisSessionStore, service: ArchiveService, owner: str = "o_alice"
) -> tuple[str, str]:
    manager = manager_for(redis_store, service)
    active = await session_with_turns(manager, owner=owner, turns=1)
    archived = await session_with_turns(manager, owner=owner, turns=2)
    assert isinstance(await service.archive(archived, actor="scheduler"), Ok)
    return active, archived


async def test_the_export_holds_every_session_with_its_messages(
    redis_store: RedisSessionStore, service: ArchiveService, privacy: PrivacyService
) -> None:
    active, archived = await two_sessions(redis_store, service)
    await two_sessions(redis_store, service, owner="o_bob")

    export = await privacy.export("o_alice", actor="owner:o_alice")

    sessions = [t async for t in export.sessions]
    records = [r async for r in export.records]
    events = [e async for e in export.audit_events]
    by_id = {t.session.id: t for t in sessions}
    assert [t.session.id for t in sessions] == [active, archived]  # oldest first, active or archived
    assert len(by_id[active].messages) == 2 and len(by_id[archived].messages) == 4
    assert by_id[archived].messages[0].content == f"{CANARY} 0"
    assert {str(r.id) for r in records} == {active, archived}
    assert {e.action for e in events} >= {"session.create", "session.archive"}
    assert all(e.target in {active, archived} for e in events if e.action != "owner.export")
    assert await AuditEvent.objects.filter(action="owner.export", target="o_alice").aexists()


async def test_erasure_removes_everything_and_shreds_the_key(
    redis_store: RedisSessionStore,
    blob_store: AzureBlobArchiveStore,
    keys: KeyRing,
    service: ArchiveService,
    privacy: PrivacyService,
) -> None:
    active, archived = await two_sessions(redis_store, service)
    bob_active, _ = await two_sessions(redis_store, service, owner="o_bob")
    retried = IdempotentRequest("k1", fingerprint="a retried turn")
    await idempotency.claim("o_alice", retried, pending_seconds=60)
    await idempotency.complete("o_alice", retried, {"reply": CANARY}, ttl=600)
    await limiter.admit("o_alice")
    backup = await blob_store.get("o_alice", archived)  # a copy taken before the erasure
    assert backup is not None

    receipt = await privacy.erase("o_alice", actor="owner:o_alice")

    assert (receipt.active_sessions, receipt.archived_sessions, receipt.session_records) == (1, 1, 2)
    assert receipt.data_key_destroyed is True
    assert isinstance(await redis_store.load(active, owner="o_alice"), Err)
    assert await blob_store.list_by_owner("o_alice") == []
    assert await blob_store.get("o_alice", archived) is None
    # The records are tombstones: no archive object named, the erasure's time.
    tombstones = [r async for r in SessionRecord.objects.filter(owner="o_alice")]
    assert {r.id.hex for r in tombstones} == {active.replace("-", ""), archived.replace("-", "")}
    assert {(r.status, r.object_name, r.erased_at) for r in tombstones} == {("erased", "", receipt.erased_at)}
    # The replies kept for idempotent retries and the rate counts are gone too.
    assert await idempotency.claim("o_alice", retried, pending_seconds=60) == (Claim.NEW, None)
    await limiter.admit("o_alice")  # a fresh minute's count: no 429
    # The backup copy is now noise: its data key is gone.
    await blob_store.put("o_alice", archived, backup)
    with pytest.raises(ArchiveUnreadable) as caught:
        await service.fetch(archived, owner="o_alice")
    assert isinstance(caught.value.__cause__, UnreadableArchive)
    # Bob is untouched.
    assert isinstance(await redis_store.load(bob_active, owner="o_bob"), Ok)
    assert await SessionRecord.objects.filter(owner="o_bob").acount() == 2
    # The receipt stays, content-free, in the audit trail.
    event = await AuditEvent.objects.aget(action="owner.erase", target="o_alice")
    assert event.details["receipt_id"] == receipt.id and event.details["archived_sessions"] == 1
    assert CANARY not in str(event.details)


async def test_an_export_after_erasure_holds_no_session_and_no_record(
    redis_store: RedisSessionStore, service: ArchiveService, privacy: PrivacyService
) -> None:
    await two_sessions(redis_store, service)
    await privacy.erase("o_alice", actor="operator")

    export = await privacy.export("o_alice", actor="owner:o_alice")

    assert [s async for s in export.sessions] == []
    assert [r async for r in export.records] == []
    events = [e async for e in export.audit_events]
    assert [e.action for e in events] == ["owner.erase", "owner.export"]  # about the owner; none about a session
    assert await SessionRecord.objects.filter(owner="o_alice", status="erased").acount() == 2


async def test_erasing_again_finds_nothing_left(
    redis_store: RedisSessionStore, service: ArchiveService, privacy: PrivacyService
) -> None:
    await two_sessions(redis_store, service)
    await privacy.erase("o_alice", actor="operator")

    again = await privacy.erase("o_alice", actor="operator")

    assert (again.active_sessions, again.archived_sessions, again.session_records, again.data_key_destroyed) == (
        0,
        0,
        0,
        False,
    )


@pytest.fixture
async def memory_archive() -> AsyncIterator[InMemoryArchiveStore]:
    archive = InMemoryArchiveStore()
    await archive.start()
    yield archive
    await archive.close()


@pytest.fixture
def archive_service(
    any_store: SessionStorePorts, memory_archive: InMemoryArchiveStore, keys: KeyRing
) -> ArchiveService:
    """The archive service over each active store in turn (see `any_store`), archiving in memory."""
    return ArchiveService(
        active=any_store,
        archive=memory_archive,
        keys=keys,
        recorder=DatabaseRecorder(),
        clock=utc_now_ms_precision,
        lock_seconds=30,
    )


@pytest.fixture
def any_privacy(
    any_store: SessionStorePorts, memory_archive: InMemoryArchiveStore, keys: KeyRing, archive_service: ArchiveService
) -> PrivacyService:
    return PrivacyService(
        active=any_store,
        archive=memory_archive,
        archive_service=archive_service,
        keys=keys,
        clock=utc_now_ms_precision,
    )


async def keyed_turn(manager: SessionManager, session_id: str, key: str, owner: str = "o_alice") -> TurnOutcome:
    """A turn sent with an Idempotency-Key, as the API sends one."""
    outcome = await manager.turn_send(
        TurnRequest(
            owner=owner,
            session_id=session_id,
            content=f"{CANARY} {key}",
            idempotent=IdempotentRequest(key, fingerprint=f"fp-of-{key}"),
        ),
    )
    assert isinstance(outcome, Ok)
    return outcome.value


async def test_the_export_lists_the_keyed_turns_each_active_session_keeps(
    any_store: SessionStorePorts, archive_service: ArchiveService, any_privacy: PrivacyService
) -> None:
    manager = SessionManager(
        store=any_store,
        backend=FakeChatBackend(),
        policy=SessionPolicy(),
        recorder=DatabaseRecorder(),
        archive=archive_service,
        idempotency_ttl=600,
    )
    first = unwrap(await manager.session_create(owner="o_alice")).id
    second = unwrap(await manager.session_create(owner="o_alice")).id
    turns = {key: await keyed_turn(manager, session, key) for session, key in ((first, "k-1"), (second, "k-2"))}
    await keyed_turn(manager, second, "k-3")
    await session_with_turns(manager, turns=1)  # turns without a key: nothing kept
    bobs = unwrap(await manager.session_create(owner="o_bob")).id
    await keyed_turn(manager, bobs, "k-bob", owner="o_bob")

    export = await any_privacy.export("o_alice", actor="owner:o_alice")

    kept = export.side_stores["keyed_turns"]
    # Oldest session first, each session's newest first; as the session keeps them, fingerprint aside.
    assert [(k["session_id"], k["key_id"]) for k in kept] == [
        (first, IdempotentRequest("k-1", "").key_id),
        (second, IdempotentRequest("k-3", "").key_id),
        (second, IdempotentRequest("k-2", "").key_id),
    ]
    turn = turns["k-1"]
    assert kept[0]["result"] == {
        "session_id": first,
        "user_message_id": turn.user_message.id,
        "message_id": turn.message.id,
        "usage": [turn.usage.input_tokens, turn.usage.output_tokens],
        "finish_reason": "stop",
    }
    assert all(0 < k["expires_in_seconds"] <= 600 for k in kept)
    assert CANARY not in str(kept) and "fp-of" not in str(kept) and bobs not in str(kept)


async def test_an_archived_session_keeps_no_keyed_turns_to_export(
    any_store: SessionStorePorts, archive_service: ArchiveService, any_privacy: PrivacyService
) -> None:
    manager = SessionManager(
        store=any_store,
        backend=FakeChatBackend(),
        policy=SessionPolicy(),
        recorder=DatabaseRecorder(),
        archive=archive_service,
    )
    session = unwrap(await manager.session_create(owner="o_alice")).id
    await keyed_turn(manager, session, "k-1")
    assert isinstance(await archive_service.archive(session, actor="scheduler"), Ok)

    export = await any_privacy.export("o_alice", actor="owner:o_alice")

    assert [t.session.id async for t in export.sessions] == [session]
    assert export.side_stores["keyed_turns"] == []


async def test_erasure_removes_a_sessions_keyed_turns_from_redis(
    redis_store: RedisSessionStore,
    redis_url: str,
    redis_prefix: str,
    service: ArchiveService,
    privacy: PrivacyService,
) -> None:
    session = await keyed_session(manager_for(redis_store, service))
    keyed = f"{redis_prefix}:s:{{{session}}}:k"
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.exists(keyed) == 1

        await privacy.erase("o_alice", actor="owner:o_alice")

        assert await client.exists(keyed) == 0
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_erasure_removes_a_sessions_keyed_turns_from_the_cluster(
    redis_cluster: RedisClusterNodes, cluster_prefix: str, keys: KeyRing, blob_store: AzureBlobArchiveStore
) -> None:
    store = RedisSessionStore(url=redis_cluster.url, prefix=cluster_prefix, cluster=True, activity_shards=4)
    service = ArchiveService(
        active=store, archive=blob_store, keys=keys, recorder=DatabaseRecorder(), clock=utc_now_ms_precision
    )
    privacy = PrivacyService(
        active=store, archive=blob_store, archive_service=service, keys=keys, clock=utc_now_ms_precision
    )
    try:
        session = await keyed_session(manager_for(store, service))
        keyed = f"{cluster_prefix}:s:{{{session}}}:k"
        assert sum(redis_cluster.keys_per_master(keyed).values()) == 1

        await privacy.erase("o_alice", actor="owner:o_alice")

        assert sum(redis_cluster.keys_per_master(keyed).values()) == 0
    finally:
        await store.close()


async def keyed_session(manager: SessionManager) -> str:
    session = unwrap(await manager.session_create(owner="o_alice")).id
    await keyed_turn(manager, session, "k-1")
    return session
