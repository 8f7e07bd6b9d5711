"""An owner's rights over their data: a full export (GDPR Art. 15 and 20) and erasure (Art. 17)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archive.keys import KeyRing
from archive.ports import ArchiveSessionStore
from archive.services import ArchiveService
from core.audit import audit
from core.models import AuditEvent
from core.observability import metrics
from core.result import Ok
from sessions_app.domain import Transcript
from sessions_app.models import SessionRecord
from sessions_app.ports import ActiveSessionStore


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What an erasure removed: counts and ids, never content. Kept in the audit trail."""

    id: str
    erased_at: datetime
    active_sessions: int
    archived_sessions: int
    session_records: int
    data_key_destroyed: bool


@dataclass(frozen=True, slots=True)
class OwnerExport:
    owner: str
    exported_at: datetime
    sessions: list[Transcript]
    records: list[SessionRecord]
    audit_events: list[AuditEvent]
    side_stores: dict[str, Any]


class PrivacyService:
    def __init__(
        self,
        *,
        active: ActiveSessionStore,
        archive: ArchiveSessionStore,
        archive_service: ArchiveService,
        keys: KeyRing,
        clock: Callable[[], datetime],
        forget: Sequence[Callable[[str], Awaitable[None]]] = (),
        describe: Mapping[str, Callable[[str], Awaitable[Any]]] | None = None,
    ) -> None:
        """`forget`: the other places keyed by owner, each dropping what it holds about
        one (idempotency records, which keep replies, and rate-limit counters); `describe`:
        the same places by name, each listing what it holds about one, without content."""
        self._active = active
        self._archive = archive
        self._archive_service = archive_service
        self._keys = keys
        self._clock = clock
        self._forget = forget
        self._describe = dict(describe or {})

    async def export(self, owner: str, *, actor: str) -> OwnerExport:
        """Everything the gateway holds about `owner`: active and archived sessions with their
        messages, the session records and the audit events about them."""
        sessions: list[Transcript] = []
        async for session_id in self._active_ids(owner):
            loaded = await self._active.load(session_id, owner=owner)
            if isinstance(loaded, Ok):
                sessions.append(loaded.value)
        active_ids = {t.session.id for t in sessions}
        for session_id in await self._archive.list_by_owner(owner):
            if session_id not in active_ids:
                archived = await self._archive_service.fetch(session_id, owner=owner)
                if archived is not None:
                    sessions.append(archived)
        sessions.sort(key=lambda t: t.session.created_at)
        records = [r async for r in SessionRecord.objects.filter(owner=owner).order_by("created_at")]
        ids = [str(r.id) for r in records] + [t.session.id for t in sessions]
        events = [e async for e in AuditEvent.objects.filter(target_type="session", target__in=ids).order_by("at")] + [
            e async for e in AuditEvent.objects.filter(target_type="owner", target=owner).order_by("at")
        ]
        await audit(
            actor=actor, action="owner.export", target_type="owner", target=owner, details={"sessions": len(sessions)}
        )
        return OwnerExport(owner, self._clock(), sessions, records, events, await self.owner_side_stores(owner))

    async def owner_side_stores(self, owner: str) -> dict[str, Any]:
        """What the gateway keeps about `owner` beside their sessions: Idempotency-Key records,
        rate-limit counts and data-key ids. Ids, counts and times; never content or key material."""
        side = {name: await describe(owner) for name, describe in self._describe.items()}
        side["data_keys"] = await self._keys.describe(owner)
        return side

    async def erase(self, owner: str, *, actor: str) -> ErasureReceipt:
        """Erase everything about `owner`: their data key first (so every copy of their
        archives, backups included, is unreadable from that moment), then the archived
        objects, the active sessions and the session records. Running it again after a
        crash finishes the job. The content-free receipt stays in the audit trail.

        It runs with the owner closed to archiving and resuming (see `ArchiveService`): those
        under way finish first and none starts until it is done, so none can write an object,
        a record or a new data key behind it. Busy past the wait: `OwnerBusy`, nothing
        erased yet, retry."""
        async with self._archive_service.owner_closed(owner):
            key_destroyed = await self._keys.destroy(owner)
            archived = await self._archive.delete_by_owner(owner)
            active = 0
            async for session_id in self._active_ids(owner):
                if isinstance(await self._active.delete(session_id, owner=owner), Ok):
                    active += 1
            for forget in self._forget:
                await forget(owner)
            records, _ = await SessionRecord.objects.filter(owner=owner).adelete()
        receipt = ErasureReceipt(
            id=str(uuid.uuid4()),
            erased_at=self._clock(),
            active_sessions=active,
            archived_sessions=archived,
            session_records=records,
            data_key_destroyed=key_destroyed,
        )
        await audit(
            actor=actor, action="owner.erase", target_type="owner", target=owner, details=receipt_details(receipt)
        )
        metrics.ARCHIVE_OPERATIONS.labels(operation="erase", outcome="ok").inc()
        return receipt

    async def _active_ids(self, owner: str) -> AsyncIterator[str]:
        cursor: str | None = None
        while True:
            page = await self._active.list_by_owner(owner, limit=100, cursor=cursor)
            for session in page.sessions:
                yield session.id
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def receipt_details(receipt: ErasureReceipt) -> dict[str, Any]:
    return {
        "receipt_id": receipt.id,
        "erased_at": receipt.erased_at.isoformat(),
        "active_sessions": receipt.active_sessions,
        "archived_sessions": receipt.archived_sessions,
        "session_records": receipt.session_records,
        "data_key_destroyed": receipt.data_key_destroyed,
    }
