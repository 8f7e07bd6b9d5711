"""Fixtures for the archive: each store adapter, a key ring, a wired archive service."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archive.keys import KeyRing
from archive.ports import ArchiveSessionStore
from archive.services import ArchiveService
from archive.stores.azure_blob import AzureBlobArchiveStore
from archive.stores.filesystem import FilesystemArchiveStore
from archive.stores.memory import InMemoryArchiveStore
from sessions_app.recording import DatabaseRecorder
from sessions_app.services import utc_now_ms_precision
from sessions_app.stores.redis import RedisSessionStore


def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture(params=["memory", "filesystem", "azurite"])
async def archive_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArchiveSessionStore]:
    store: ArchiveSessionStore
    if request.param == "memory":
        store = InMemoryArchiveStore()
    elif request.param == "filesystem":
        store = FilesystemArchiveStore(root=str(tmp_path / "archive"))
    else:
        store = AzureBlobArchiveStore(
            container=f"t{uuid.uuid4().hex[:20]}", connection_string=request.getfixturevalue("azurite")
        )
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def blob_store(azurite: str) -> AsyncIterator[AzureBlobArchiveStore]:
    store = AzureBlobArchiveStore(container=f"t{uuid.uuid4().hex[:20]}", connection_string=azurite)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing(keks={"k1": kek()}, active_kek="k1")


@pytest.fixture
def service(redis_store: RedisSessionStore, blob_store: AzureBlobArchiveStore, keys: KeyRing) -> ArchiveService:
    """The archive service on the real Redis, Azurite and the test database."""
    return ArchiveService(
        active=redis_store,
        archive=blob_store,
        keys=keys,
        recorder=DatabaseRecorder(),
        clock=utc_now_ms_precision,
        lock_seconds=30,
    )


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()
