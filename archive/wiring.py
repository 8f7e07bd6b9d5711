"""The process's archive, key ring and services, chosen once from settings."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from archive.keys import KeyRing, development_kek, parse_keks
from archive.ports import ArchiveSessionStore, OwnerGate
from archive.privacy import PrivacyService
from archive.services import ArchiveService
from core.adapters import build_adapter
from limits.wiring import get_limiter
from sessions_app.public import (
    DatabaseRecorder,
    get_archiver_store,
    get_idempotency_store,
    get_session_store,
    utc_now_ms_precision,
)


@functools.cache
def get_archive_store() -> ArchiveSessionStore:
    store: ArchiveSessionStore = build_adapter(settings.ARCHIVE_STORE)
    return store


@functools.cache
def get_owner_gate() -> OwnerGate:
    gate: OwnerGate = build_adapter(settings.ARCHIVE_OWNER_GATE)
    return gate


@functools.cache
def get_key_ring() -> KeyRing:
    spec = settings.ARCHIVE_KEKS or development_kek(Path(settings.ARCHIVE_DEV_KEK_PATH))
    keks = parse_keks(spec)
    return KeyRing(keks=keks, active_kek=settings.ARCHIVE_ACTIVE_KEK or next(iter(keks)))


@functools.cache
def get_archive_service() -> ArchiveService:
    return ArchiveService(
        active=get_archiver_store(),
        archive=get_archive_store(),
        keys=get_key_ring(),
        recorder=DatabaseRecorder(),
        clock=utc_now_ms_precision,
        lock_seconds=settings.ARCHIVE_LOCK_SECONDS,
        max_sessions_per_owner=settings.SESSION_LIMITS["MAX_SESSIONS_PER_OWNER"],
        gate=get_owner_gate(),
        close_wait=settings.ARCHIVE_ERASURE_WAIT_SECONDS,
        # Looked up per call: those stores follow their own settings.
        forget_session=(
            lambda owner, session_id: get_idempotency_store().forget_session(owner, session_id),
            *(side.forget_session for side in _side_stores()),
        ),
    )


@functools.cache
def get_privacy_service() -> PrivacyService:
    return PrivacyService(
        active=get_session_store(),
        archive=get_archive_store(),
        archive_service=get_archive_service(),
        keys=get_key_ring(),
        clock=utc_now_ms_precision,
        # Looked up per call: those stores follow their own settings.
        forget=(
            lambda owner: get_idempotency_store().forget(owner),
            lambda owner: get_limiter().forget(owner),
            *(side.forget for side in _side_stores()),
        ),
        describe={
            "idempotency_records": lambda owner: get_idempotency_store().describe(owner),
            "rate_limits": lambda owner: get_limiter().describe(owner),
            **{side.name: side.describe for side in _side_stores()},
        },
    )


@dataclass(frozen=True, slots=True)
class _SideStore:
    """A store of another app that holds owner data (OWNER_SIDE_STORES): its getter is looked up
    by dotted path, so this app never imports that one, and called per use (it follows its own
    settings)."""

    name: str
    getter: Callable[[], Any]

    async def forget(self, owner: str) -> None:
        await self.getter().forget(owner)

    async def describe(self, owner: str) -> Any:
        return await self.getter().describe(owner)

    async def forget_session(self, owner: str, session_id: str) -> None:
        await self.getter().forget_session(owner, session_id)


def _side_stores() -> list[_SideStore]:
    return [_SideStore(name, import_string(path)) for name, path in settings.OWNER_SIDE_STORES.items()]


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("ARCHIVE_") or setting in {"ACTIVE_SESSION_STORE", "SESSION_LIMITS", "OWNER_SIDE_STORES"}:
        for cached in (get_archive_store, get_owner_gate, get_key_ring, get_archive_service, get_privacy_service):
            cached.cache_clear()
