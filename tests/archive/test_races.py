"""Races between the jobs that write an owner's archives and those that destroy them, on the
real Redis, Azurite and database: erasure against archiving, purge against archiving.

Each race runs a few rounds with the erasure (or purge) started at a different moment among
many archives, by two "processes" (services with their own gate clients on the same Redis),
then checks every store. Bounded: a few seconds in all.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from archive.errors import OwnerBusy
from archive.keys import KeyRing
from archive.models import OwnerDataKey
from archive.owner_gate import RedisOwnerGate
from archive.ports import ArchiveSessionStore
from archive.privacy import PrivacyService
from archive.services import ArchiveService
from archive.stores.azure_blob import AzureBlobArchiveStore
from core.result import Ok
from limits.redis import RedisLimiter
from llm_backend.fake import FakeChatBackend
from sessions_app.idempotency import IdempotentRequest, RedisIdempotencyStore
from sessions_app.models import SessionRecord
from sessions_app.recording import DatabaseRecorder
from sessions_app.services import SessionManager, SessionPolicy, utc_now_ms_precision
from sessions_app.stores.redis import RedisSessionStore
from tests.archive.test_services import CANARY, manager_for, session_with_turns

pytestmark = pytest.mark.django_db(transaction=True)
ROUNDS = 4
SESSIONS = 10


class SlowUploads:
    """The real Azurite store, with each upload delayed a little (a slow link): it widens the
    window between an archive taking the owner's key and recording its object."""

    def __init__(self, store: AzureBlobArchiveStore, rng: random.Random) -> None:
        self._store = store
        self._rng = rng
        self.uploading = asyncio.Event()  # set once an archive has its key and starts uploading

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def put(self, owner: str, session_id: str, data: bytes) -> str:
        self.uploading.set()
        await asyncio.sleep(self._rng.uniform(0.1, 0.2))
        return await self._store.put(owner, session_id, data)


class Process:
    """What one gateway or scheduler process holds: its own clients on the shared stores."""

    def __init__(self, redis_url: str, prefix: str, blob: ArchiveSessionStore, keys: KeyRing) -> None:
        self.store = RedisSessionStore(url=redis_url, prefix=prefix, ttl_seconds=3600)
        self.gate = RedisOwnerGate(url=redis_url, prefix=prefix)
        self.idempotency = RedisIdempotencyStore(url=redis_url, prefix=prefix)
        self.limiter = RedisLimiter(url=redis_url, prefix=prefix, requests_per_minute=100, tokens_per_minute=0)
        self.archive = ArchiveService(
            active=self.store,
            archive=blob,
            keys=keys,
            recorder=DatabaseRecorder(),
            clock=utc_now_ms_precision,
            lock_seconds=30,
            gate=self.gate,
            close_wait=30,  # generous: the verdict must not hang on a loaded machine's speed
        )
        self.privacy = PrivacyService(
            active=self.store,
            archive=blob,
            archive_service=self.archive,
            keys=keys,
            clock=utc_now_ms_precision,
            forget=(self.idempotency.forget, self.limiter.forget),
        )
        self.uploads: SlowUploads | None = None

    async def close(self) -> None:
        await self.store.close()
        await self.gate.close_connections()
        await self.idempotency.close()
        await self.limiter.close()


@pytest.fixture
async def processes(
    redis_url: str, redis_prefix: str, blob_store: AzureBlobArchiveStore, keys: KeyRing
) -> AsyncIterator[tuple[Process, Process]]:
    slow = SlowUploads(blob_store, random.Random(7))  # noqa: S311 - seeded jitter, not a secret
    archive = cast(ArchiveSessionStore, slow)
    gateway = Process(redis_url, redis_prefix, archive, keys)
    scheduler = Process(redis_url, redis_prefix, archive, keys)
    gateway.uploads = scheduler.uploads = slow
    yield gateway, scheduler
    await gateway.close()
    await scheduler.close()


async def owner_with_sessions(gateway: Process, owner: str, count: int) -> list[str]:
    manager = manager_for(gateway.store, gateway.archive)
    ids = list(await asyncio.gather(*(session_with_turns(manager, owner=owner, turns=1) for _ in range(count))))
    # Side stores too: a remembered Idempotency-Key and this minute's request count.
    request = IdempotentRequest.of("k-1", "turn", ids[0], CANARY)
    assert request is not None
    await gateway.idempotency.claim(owner, request, pending_seconds=60)
    await gateway.idempotency.complete(owner, request, {"session_id": ids[0]}, ttl=600)
    await gateway.limiter.admit(owner)
    return ids


async def archive_all(gateway: Process, scheduler: Process, owner: str, ids: list[str]) -> None:
    """Half ended by the owner (`POST .../end`, on the gateway), half by the scheduler's pass."""
    manager = manager_for(gateway.store, gateway.archive)
    work = [
        manager.session_end(owner=owner, session_id=session_id)
        if n % 2
        else scheduler.archive.archive(session_id, actor="scheduler")
        for n, session_id in enumerate(ids)
    ]
    await asyncio.gather(*work)  # failures come back as Err: the erasure may have won


async def live_records(owner: str) -> list[tuple[str, str, str]]:
    """The owner's records that are not content-free tombstones (erased, naming no object)."""
    records = SessionRecord.objects.filter(owner=owner).values_list("id", "status", "object_name")
    return [(str(i), status, name) async for i, status, name in records if (status, name) != ("erased", "")]


async def erase_until_done(gateway: Process, owner: str, delay: float) -> None:
    await asyncio.sleep(delay)
    for _ in range(100):
        try:
            await gateway.privacy.erase(owner, actor=f"owner:{owner}")
            return
        except OwnerBusy:  # the contract: retry
            await asyncio.sleep(0.05)
    raise AssertionError("the erasure never got through")


async def purge_while_uploading(scheduler: Process, delay: float) -> None:
    """The retention purge, run once an archive has taken the owner's key and not yet
    recorded its object."""
    assert scheduler.uploads is not None
    await scheduler.uploads.uploading.wait()
    await asyncio.sleep(delay)
    await scheduler.archive.purge_expired(older_than=timedelta(days=90))


async def owner_keys_in_redis(redis_url: str, prefix: str, owner: str, ids: list[str]) -> list[str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        left = [k for k in keys if f"{{{owner}}}" in k or any(i in k for i in ids)]
        activity = await client.zrange(f"{prefix}:{{activity}}", 0, -1)
        left += [m.decode() for m in activity if m.decode() in ids]
    finally:
        await client.aclose()
    return left


async def test_erasure_racing_archiving_leaves_nothing_of_the_owner_anywhere(
    processes: tuple[Process, Process], blob_store: AzureBlobArchiveStore, redis_url: str, redis_prefix: str
) -> None:
    gateway, scheduler = processes
    rng = random.Random(11)  # noqa: S311 - seeded jitter
    for round_ in range(ROUNDS):
        owner = f"o_race{round_}_{uuid.uuid4().hex[:6]}"
        ids = await owner_with_sessions(gateway, owner, SESSIONS)

        # The erasure starts anywhere from before the first archive to among the last ones.
        await asyncio.gather(
            archive_all(gateway, scheduler, owner, ids), erase_until_done(gateway, owner, rng.uniform(0, 0.15))
        )

        assert await owner_keys_in_redis(redis_url, redis_prefix, owner, ids) == [], f"round {round_}"
        assert await blob_store.list_by_owner(owner) == [], f"round {round_}"
        assert await live_records(owner) == [], f"round {round_}"
        assert not await OwnerDataKey.objects.filter(owner=owner).aexists(), f"round {round_}"
        export = await gateway.privacy.export(owner, actor="operator")
        sessions, records = [s async for s in export.sessions], [r async for r in export.records]
        assert (sessions, records) == ([], []), f"round {round_}"


async def test_purge_racing_archiving_never_destroys_a_key_in_use(
    processes: tuple[Process, Process], blob_store: AzureBlobArchiveStore
) -> None:
    gateway, scheduler = processes
    rng = random.Random(3)  # noqa: S311 - seeded jitter
    for round_ in range(ROUNDS):
        owner = f"o_purge{round_}_{uuid.uuid4().hex[:6]}"
        # Few sessions: the first archive to record its object closes the window.
        expired, *ids = await owner_with_sessions(gateway, owner, 3)
        assert isinstance(await scheduler.archive.archive(expired, actor="scheduler"), Ok)
        # Past retention: the purge deletes it, and then finds the owner without archives.
        await SessionRecord.objects.filter(id=expired).aupdate(archived_at=datetime.now(UTC) - timedelta(days=100))

        assert scheduler.uploads is not None
        scheduler.uploads.uploading.clear()
        await asyncio.gather(
            archive_all(gateway, scheduler, owner, ids), purge_while_uploading(scheduler, rng.uniform(0, 0.05))
        )

        # Every session is either still active (its archiving was refused, to be retried) or
        # archived and readable: none encrypted under a destroyed key.
        for session_id in ids:
            active = await gateway.store.load(session_id, owner=owner)
            if isinstance(active, Ok):
                continue
            archived = await gateway.archive.fetch(session_id, owner=owner)
            assert archived is not None, f"round {round_}: session lost"
            assert archived.messages[0].content == f"{CANARY} 0"
        assert await blob_store.get(owner, expired) is None


async def test_deleting_a_session_racing_its_archiving_leaves_no_copy_or_record(
    processes: tuple[Process, Process], blob_store: AzureBlobArchiveStore, redis_url: str, redis_prefix: str
) -> None:
    gateway, scheduler = processes
    manager = SessionManager(
        store=gateway.store,
        backend=FakeChatBackend(),
        policy=SessionPolicy(),
        recorder=DatabaseRecorder(),
        archive=gateway.archive,
        idempotency=gateway.idempotency,
    )
    rng = random.Random(5)  # noqa: S311 - seeded jitter
    owner = f"o_delete_{uuid.uuid4().hex[:6]}"
    ids = await owner_with_sessions(gateway, owner, SESSIONS)

    async def delete_later(session_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await manager.session_delete(owner=owner, session_id=session_id)

    await asyncio.gather(
        *(scheduler.archive.archive(i, actor="scheduler") for i in ids),
        *(delete_later(i, rng.uniform(0, 0.2)) for i in ids),
    )

    assert await blob_store.list_by_owner(owner) == []
    assert await live_records(owner) == []
    left = [k for k in await owner_keys_in_redis(redis_url, redis_prefix, owner, ids) if ":idem" in k or ":s:" in k]
    assert left == []
