"""Archiving, resuming and purging against the real Redis, Azurite and database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from archive.errors import ArchiveUnavailable
from archive.keys import KeyRing
from archive.owner_gate import MemoryOwnerGate
from archive.services import ArchiveService
from archive.stores.azure_blob import AzureBlobArchiveStore
from audit.models import AuditEvent
from core.errors import StoreUnavailable
from core.result import Err, Ok
from llm_backend.fake import FakeChatBackend
from sessions_app.domain import SessionStatus
from sessions_app.errors import SessionNotActive, TurnInProgress
from sessions_app.idempotency import IdempotentRequest, MemoryIdempotencyStore
from sessions_app.models import SessionRecord
from sessions_app.recording import DatabaseRecorder
from sessions_app.services import SessionManager, SessionPolicy, utc_now_ms_precision
from sessions_app.stores.redis import RedisSessionStore
from sessions_app.turns import TurnRequest

pytestmark = pytest.mark.django_db(transaction=True)
CANARY = "canary-3f9d-secret-words"


def manager_for(
    store: RedisSessionStore, service: ArchiveService, backend: FakeChatBackend | None = None
) -> SessionManager:
    return SessionManager(
        store=store,
        backend=backend or FakeChatBackend(),
        policy=SessionPolicy(),
        recorder=DatabaseRecorder(),
        archive=service,
    )


async def session_with_turns(manager: SessionManager, owner: str = "o_alice", turns: int = 2) -> str:
    created = await manager.session_create(owner=owner, system_prompt="Be brief.", metadata={"tag": "t"})
    assert isinstance(created, Ok)
    for n in range(turns):
        assert isinstance(
            await manager.turn_send(TurnRequest(owner=owner, session_id=created.value.id, content=f"{CANARY} {n}")), Ok
        )
    return created.value.id


async def test_archiving_moves_the_session_into_an_encrypted_object(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    session_id = await session_with_turns(manager)
    before = await redis_store.load(session_id, owner="o_alice")
    assert isinstance(before, Ok)

    result = await service.archive(session_id, actor="scheduler")

    assert isinstance(result, Ok) and result.value.status == SessionStatus.ARCHIVED
    assert isinstance(await redis_store.load(session_id, owner="o_alice"), Err)
    sealed = await blob_store.get("o_alice", session_id)
    assert sealed is not None and CANARY.encode() not in sealed and b"Be brief" not in sealed
    fetched = await service.fetch(session_id, owner="o_alice")
    assert fetched is not None
    assert fetched.messages == before.value.messages
    assert fetched.session.system_prompt == "Be brief." and fetched.session.metadata == {"tag": "t"}
    record = await SessionRecord.objects.aget(id=session_id)
    assert (record.status, record.message_count, record.object_name) == (
        "archived",
        4,
        f"owners/o_alice/sessions/{session_id}.lsga",
    )
    assert record.archived_at is not None
    assert await AuditEvent.objects.filter(target=session_id, action="session.archive", actor="scheduler").aexists()
    assert await service.fetch(session_id, owner="o_mallory") is None


async def test_ending_archives_at_once_and_a_message_then_is_refused(
    redis_store: RedisSessionStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    session_id = await session_with_turns(manager, turns=1)

    ended = await manager.session_end(owner="o_alice", session_id=session_id)
    again = await manager.session_end(owner="o_alice", session_id=session_id)
    turn = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="more"))

    assert isinstance(ended, Ok) and ended.value.status == SessionStatus.ARCHIVED
    assert isinstance(again, Ok) and again.value.status == SessionStatus.ARCHIVED
    assert isinstance(turn, Err) and isinstance(turn.error, SessionNotActive)
    detail = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(detail, Ok) and detail.value.session.status == SessionStatus.ARCHIVED
    assert len(detail.value.messages) == 2


async def test_resume_brings_the_whole_history_back_and_the_conversation_continues(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, service: ArchiveService
) -> None:
    backend = FakeChatBackend()
    manager = manager_for(redis_store, service, backend)
    session_id = await session_with_turns(manager, turns=2)
    await manager.session_end(owner="o_alice", session_id=session_id)

    resumed = await manager.session_resume(owner="o_alice", session_id=session_id)
    turn = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="and now?"))

    assert isinstance(resumed, Ok) and resumed.value.status == SessionStatus.ACTIVE
    assert isinstance(turn, Ok) and turn.value.session.message_count == 6
    assert [m.content for m in backend.requests[-1].messages] == [
        "Be brief.",
        f"{CANARY} 0",
        f"Echo: {CANARY} 0",
        f"{CANARY} 1",
        f"Echo: {CANARY} 1",
        "and now?",
    ]
    assert await blob_store.get("o_alice", session_id) is None  # it lives in Redis again
    record = await SessionRecord.objects.aget(id=session_id)
    assert (record.status, record.archived_at, record.object_name) == ("active", None, "")


class Flaky:
    """Wraps an adapter; the named methods fail the next `times` calls."""

    def __init__(self, inner: Any, error: Exception, **fail: int) -> None:
        self._inner, self._error, self.fail = inner, error, fail

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if self.fail.get(name, 0) <= 0:
            return attribute

        async def failing(*args: Any, **kwargs: Any) -> Any:
            self.fail[name] -= 1
            raise self._error

        return failing


class CorruptingArchive(Flaky):
    """Reads back something other than what was written."""

    async def get(self, owner: str, session_id: str) -> bytes | None:
        data = await self._inner.get(owner, session_id)
        return data[:-1] if data else data


def service_with(
    redis_store: Any, blob_store: Any, keys: KeyRing, recorder: Any = None, lock_seconds: float = 30
) -> ArchiveService:
    return ArchiveService(
        active=redis_store,
        archive=blob_store,
        keys=keys,
        recorder=recorder or DatabaseRecorder(),
        clock=utc_now_ms_precision,
        lock_seconds=lock_seconds,
    )


async def assert_archived_exactly_once(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, session_id: str, messages: int
) -> None:
    assert isinstance(await redis_store.load(session_id, owner="o_alice"), Err)
    assert await blob_store.list_by_owner("o_alice") == [session_id]
    record = await SessionRecord.objects.aget(id=session_id)
    assert record.status == "archived" and record.message_count == messages


@pytest.mark.parametrize("step", ["put", "verify", "record"])
async def test_a_failure_before_the_delete_keeps_the_session_and_a_rerun_finishes(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing, step: str
) -> None:
    good = service_with(redis_store, blob_store, keys)
    session_id = await session_with_turns(manager_for(redis_store, good))
    if step == "put":
        broken = service_with(redis_store, Flaky(blob_store, ArchiveUnavailable(), put=1), keys)
    elif step == "verify":
        broken = service_with(redis_store, CorruptingArchive(blob_store, ArchiveUnavailable()), keys)
    else:
        broken = service_with(
            redis_store, blob_store, keys, recorder=Flaky(DatabaseRecorder(), StoreUnavailable(), record=1)
        )

    failed = await broken.archive(session_id, actor="scheduler")

    assert isinstance(failed, Err)
    still = await redis_store.load(session_id, owner="o_alice")
    assert isinstance(still, Ok) and len(still.value.messages) == 4  # nothing lost
    assert (await SessionRecord.objects.aget(id=session_id)).status == "active"
    # The lock was released: the session takes turns, and the next pass archives it.
    assert isinstance(
        await manager_for(redis_store, good).turn_send(
            TurnRequest(owner="o_alice", session_id=session_id, content="x")
        ),
        Ok,
    )
    assert isinstance(await good.archive(session_id, actor="scheduler"), Ok)
    await assert_archived_exactly_once(redis_store, blob_store, session_id, messages=6)


async def test_a_crash_between_record_and_delete_is_finished_by_the_next_pass(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing
) -> None:
    good = service_with(redis_store, blob_store, keys, lock_seconds=0.3)
    session_id = await session_with_turns(manager_for(redis_store, good))
    crashing = service_with(Flaky(redis_store, StoreUnavailable(), delete_locked=1), blob_store, keys, lock_seconds=0.3)

    crashed = await crashing.archive(session_id, actor="scheduler")  # dies at the delete: the lock stays held

    assert isinstance(crashed, Err) and isinstance(crashed.error, StoreUnavailable)
    assert isinstance(await good.archive(session_id, actor="scheduler"), Err)  # locked meanwhile
    await asyncio.sleep(0.4)  # the crashed holder's lock lapses

    assert isinstance(await good.archive(session_id, actor="scheduler"), Ok)
    await assert_archived_exactly_once(redis_store, blob_store, session_id, messages=4)


async def test_racing_archivers_leave_exactly_one_copy(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing
) -> None:
    first, second = service_with(redis_store, blob_store, keys), service_with(redis_store, blob_store, keys)
    session_id = await session_with_turns(manager_for(redis_store, first))

    results = await asyncio.gather(*(s.archive(session_id, actor="scheduler") for s in (first, second, first)))

    assert sum(isinstance(r, Ok) for r in results) == 1
    assert all(isinstance(r.error, TurnInProgress) for r in results if isinstance(r, Err))
    await assert_archived_exactly_once(redis_store, blob_store, session_id, messages=4)


async def test_a_session_mid_turn_is_not_archived(redis_store: RedisSessionStore, service: ArchiveService) -> None:
    backend = FakeChatBackend(gate=asyncio.Event())
    manager = manager_for(redis_store, service, backend)
    session_id = await session_with_turns(manager, turns=0)
    turn = asyncio.create_task(manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="slow")))
    await asyncio.sleep(0.05)

    refused = await service.archive(session_id, actor="scheduler")
    backend.gate.set()  # type: ignore[union-attr]

    assert isinstance(refused, Err) and isinstance(refused.error, TurnInProgress)
    assert isinstance(await turn, Ok)  # the turn's reply was stored, not lost


async def test_the_idle_pass_archives_only_idle_sessions(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    old = await session_with_turns(manager, turns=1)
    await asyncio.sleep(0.3)
    fresh = await session_with_turns(manager, turns=1)

    dry = await service.archive_idle(idle_for=timedelta(seconds=0.2), dry_run=True)
    report = await service.archive_idle(idle_for=timedelta(seconds=0.2))

    assert (dry.examined, dry.done) == (1, 0)
    assert (report.examined, report.done, report.failed) == (1, 1, 0)
    assert await blob_store.list_by_owner("o_alice") == [old]
    assert isinstance(await redis_store.load(fresh, owner="o_alice"), Ok)


async def test_an_idle_pass_ends_at_an_unreachable_archive_and_the_next_archives_all(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing
) -> None:
    down = Flaky(blob_store, ArchiveUnavailable(), put=3)
    service = service_with(redis_store, down, keys)
    sessions = [await session_with_turns(manager_for(redis_store, service), turns=1) for _ in range(3)]
    await asyncio.sleep(0.3)

    failed = await service.archive_idle(idle_for=timedelta(seconds=0.2))

    # One attempt met the outage; the others were not tried (and not kept waiting on retries).
    assert (failed.examined, failed.done, failed.failed) == (3, 0, 3) and down.fail["put"] == 2
    for session_id in sessions:
        assert isinstance(await redis_store.load(session_id, owner="o_alice"), Ok)
    down.fail["put"] = 0
    report = await service.archive_idle(idle_for=timedelta(seconds=0.2))
    assert (report.done, report.failed) == (3, 0)
    assert sorted(await blob_store.list_by_owner("o_alice")) == sorted(sessions)


async def test_index_entries_of_vanished_sessions_do_not_stall_the_idle_pass(
    redis_store: RedisSessionStore,
    blob_store: AzureBlobArchiveStore,
    service: ArchiveService,
    redis_url: str,
    redis_prefix: str,
) -> None:
    # More stale entries than a batch, at the oldest end: ids left by a TTL or a half-done delete.
    client = redis.Redis.from_url(redis_url)
    client.zadd(f"{redis_prefix}:{{activity}}", {str(uuid.uuid4()): n for n in range(7)})
    manager = manager_for(redis_store, service)
    sessions = [await session_with_turns(manager, turns=1) for _ in range(5)]
    await asyncio.sleep(0.3)

    report = await service.archive_idle(idle_for=timedelta(seconds=0.2), batch=3)

    assert (report.done, report.failed) == (5, 0)
    assert not report.unfinished
    assert sorted(await blob_store.list_by_owner("o_alice")) == sorted(sessions)
    assert client.zcard(f"{redis_prefix}:{{activity}}") == 0


async def test_an_idle_pass_skips_the_sessions_of_an_owner_being_erased(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing
) -> None:
    gate = MemoryOwnerGate()
    service = ArchiveService(
        active=redis_store,
        archive=blob_store,
        keys=keys,
        recorder=DatabaseRecorder(),
        clock=utc_now_ms_precision,
        gate=gate,
    )
    sessions = [await session_with_turns(manager_for(redis_store, service), turns=1) for _ in range(2)]
    await asyncio.sleep(0.3)
    assert await gate.close("o_alice", "an-erasure", hold_seconds=30) == 0  # no archive was under way

    report = await service.archive_idle(idle_for=timedelta(seconds=0.2))

    assert (report.done, report.skipped, report.failed) == (0, 2, 0)  # not archive failures: nothing to alarm on
    assert await blob_store.list_by_owner("o_alice") == []
    for session_id in sessions:  # left for the erasure, unlocked
        assert isinstance(await redis_store.load(session_id, owner="o_alice"), Ok)


async def test_sessions_mid_turn_at_the_oldest_end_do_not_stall_the_idle_pass(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    busy = [await session_with_turns(manager, turns=0) for _ in range(4)]
    idle = [await session_with_turns(manager, turns=0) for _ in range(3)]
    for session_id in busy:  # a turn holds each (its reply not yet stored)
        assert isinstance(await begin_turn(redis_store, session_id), Ok)
    await asyncio.sleep(0.3)

    report = await service.archive_idle(idle_for=timedelta(seconds=0.2), batch=2)

    assert (report.done, report.skipped, report.failed) == (3, 4, 0)
    assert sorted(await blob_store.list_by_owner("o_alice")) == sorted(idle)
    for session_id in busy:
        assert isinstance(await redis_store.get(session_id, owner="o_alice"), Ok)


async def test_an_idle_pass_stops_at_its_time_budget_and_the_next_resumes(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    sessions = [await session_with_turns(manager, turns=0) for _ in range(3)]
    await asyncio.sleep(0.3)

    # A budget spent at once still archives one session per pass: every pass makes progress.
    reports = [await service.archive_idle(idle_for=timedelta(seconds=0.2), budget=0) for _ in range(4)]

    assert [(r.done, r.unfinished) for r in reports] == [(1, True), (1, True), (1, True), (0, False)]
    assert sorted(await blob_store.list_by_owner("o_alice")) == sorted(sessions)


async def test_an_idle_pass_ends_when_asked_to_stop(redis_store: RedisSessionStore, service: ArchiveService) -> None:
    manager = manager_for(redis_store, service)
    for _ in range(3):
        await session_with_turns(manager, turns=0)
    await asyncio.sleep(0.3)
    stop = asyncio.Event()
    stop.set()

    report = await service.archive_idle(idle_for=timedelta(seconds=0.2), stop=stop)

    assert (report.examined, report.done, report.unfinished) == (1, 1, True)


async def begin_turn(store: RedisSessionStore, session_id: str) -> Any:
    return await store.begin_turn(session_id, owner="o_alice", token="held", lock_seconds=60, history_limit=1)


async def test_purging_expired_archives_deletes_objects_and_unused_keys(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    expired = await session_with_turns(manager, owner="o_alice", turns=1)
    kept = await session_with_turns(manager, owner="o_bob", turns=1)
    for session_id in (expired, kept):
        assert isinstance(await service.archive(session_id, actor="scheduler"), Ok)
    await SessionRecord.objects.filter(id=expired).aupdate(archived_at=datetime.now(UTC) - timedelta(days=100))
    alice_key = (await keys.key_for("o_alice"))[0]

    dry = await service.purge_expired(older_than=timedelta(days=90), dry_run=True)
    report = await service.purge_expired(older_than=timedelta(days=90))

    assert (dry.examined, dry.done, report.done) == (1, 0, 1)
    assert await blob_store.get("o_alice", expired) is None
    assert await blob_store.get("o_bob", kept) is not None
    record = await SessionRecord.objects.aget(id=expired)
    assert (record.status, record.object_name) == ("purged", "")
    assert await keys.key_by_id(alice_key) is None  # no archive left: key material gone too
    assert await service.fetch(kept, owner="o_bob") is not None
    assert await AuditEvent.objects.filter(target=expired, action="session.purge").aexists()


async def test_archived_sessions_are_listed_newest_first_in_pages(
    redis_store: RedisSessionStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    ids = []
    for _ in range(3):
        ids.append(await session_with_turns(manager, turns=0))
        await asyncio.sleep(0.002)
    for session_id in ids:
        await service.archive(session_id, actor="scheduler")

    first = await service.list_archived("o_alice", limit=2, cursor=None)
    second = await service.list_archived("o_alice", limit=2, cursor=first.next_cursor)

    assert [s.id for s in first.sessions + second.sessions] == list(reversed(ids))
    assert all(s.status == SessionStatus.ARCHIVED and s.system_prompt == "Be brief." for s in first.sessions)
    assert second.next_cursor is None


async def test_recording_a_session_event_keeps_no_content(
    redis_store: RedisSessionStore, service: ArchiveService
) -> None:
    manager = manager_for(redis_store, service)
    session_id = await session_with_turns(manager)
    await service.archive(session_id, actor="scheduler")

    rows = [str(r.__dict__) async for r in SessionRecord.objects.all()] + [
        str(e.__dict__) async for e in AuditEvent.objects.all()
    ]

    assert rows and not any(CANARY in row or "Be brief" in row for row in rows)


async def test_a_purge_tells_the_stores_keyed_by_session_to_forget_it(
    redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing, service: ArchiveService
) -> None:
    """Retention reaches every record of a purged session, not only its archive: an
    Idempotency-Key record naming it goes, another session's stays, and a store that fails to
    forget does not stop the purge (its records lapse with their own TTL)."""
    manager = manager_for(redis_store, service)
    expired = await session_with_turns(manager, owner="o_alice", turns=1)
    kept = await session_with_turns(manager, owner="o_alice", turns=1)
    for session_id in (expired, kept):
        assert isinstance(await service.archive(session_id, actor="scheduler"), Ok)
    await SessionRecord.objects.filter(id=expired).aupdate(archived_at=datetime.now(UTC) - timedelta(days=100))
    idempotency = MemoryIdempotencyStore()
    for key, session_id in (("k-expired", expired), ("k-kept", kept)):
        request = IdempotentRequest(key, f"fingerprint-{key}")
        await idempotency.claim("o_alice", request, pending_seconds=60)
        await idempotency.complete("o_alice", request, {"session_id": session_id}, ttl=600)

    async def failing(owner: str, session_id: str) -> None:
        raise StoreUnavailable()

    purging = ArchiveService(
        active=redis_store,
        archive=blob_store,
        keys=keys,
        recorder=DatabaseRecorder(),
        clock=utc_now_ms_precision,
        lock_seconds=30,
        forget_session=(failing, idempotency.forget_session),
    )

    report = await purging.purge_expired(older_than=timedelta(days=90))

    assert report.done == 1
    remaining = [record["result"]["session_id"] for record in await idempotency.describe("o_alice")]
    assert remaining == [kept]
