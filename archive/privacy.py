"""An owner's rights over their data: a full export (GDPR Art. 15 and 20) and erasure (Art. 17)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db.models import Model, QuerySet

from archive import metrics
from archive.keys import KeyRing
from archive.ports import ArchiveSessionStore
from archive.services import ArchiveService
from audit.models import AuditEvent
from audit.services import audit
from core.result import Ok
from sessions_app.public import (
    ActiveSessionStore,
    ChatSession,
    SessionRecord,
    Transcript,
    described_keyed_write,
    erase_records,
)


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What an erasure removed: counts and ids, never content. Kept in the audit trail.
    `session_records`: the records it made tombstones of (see `erase_records`)."""

    id: str
    erased_at: datetime
    active_sessions: int
    archived_sessions: int
    session_records: int
    data_key_destroyed: bool


@dataclass(frozen=True, slots=True)
class OwnerExport:
    """The export, read as it is consumed: one session (or a chunk of rows) in memory at a
    time, however much the owner has; an owner's sessions can add up to far more than a
    response should hold (60 sessions made 30 MB)."""

    owner: str
    exported_at: datetime
    sessions: AsyncIterator[Transcript]  # oldest first
    records: AsyncIterator[SessionRecord]
    audit_events: AsyncIterator[AuditEvent]
    side_stores: dict[str, Any]  # ids, counts and times: small


_ROWS_PER_QUERY = 500
Row = TypeVar("Row", bound=Model)


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
        the same places by name, each listing what it holds about one (a stateless turn's
        idempotency record lists the answer it keeps for a replay: the owner's own content)."""
        self._active = active
        self._archive = archive
        self._archive_service = archive_service
        self._keys = keys
        self._clock = clock
        self._forget = forget
        self._describe = dict(describe or {})

    async def export(self, owner: str, *, actor: str) -> OwnerExport:
        """Everything the gateway holds about `owner`: active and archived sessions with their
        messages, the session records and the audit events about them.

        Only the ids are gathered here (so an unreachable store fails the request before any
        of it is sent); the content is read as the export is consumed."""
        records = SessionRecord.objects.filter(owner=owner).exclude(status=SessionRecord.Status.ERASED)
        created = {str(session_id): at async for session_id, at in records.values_list("id", "created_at")}
        active: dict[str, datetime] = {}
        async for session in self._active_sessions(owner):
            active[session.id] = session.created_at
        archived = [i for i in await self._archive.list_by_owner(owner) if i not in active]
        never = datetime.min.replace(tzinfo=UTC)  # an archive without its record: first
        order = sorted([*active.items(), *((i, created.get(i, never)) for i in archived)], key=lambda p: (p[1], p[0]))
        await audit(
            actor=actor, action="owner.export", target_type="owner", target=owner, details={"sessions": len(order)}
        )
        return OwnerExport(
            owner,
            self._clock(),
            self._transcripts(owner, [(i, i in active) for i, _ in order]),
            _rows(records.order_by("created_at", "id")),  # an erased session's tombstone is not theirs to export
            self._audit_events(owner, sorted({*created, *active, *archived})),
            await self.owner_side_stores(owner, [i for i, _ in order if i in active]),
        )

    async def owner_side_stores(self, owner: str, active_sessions: Sequence[str]) -> dict[str, Any]:
        """What the gateway keeps about `owner` beside their sessions: Idempotency-Key records,
        the keyed turns each active session keeps with its messages (`keyed_turns`: an archived
        session keeps none), rate-limit counts and data-key ids. Ids, counts and times; never
        content or key material."""
        side = {name: await describe(owner) for name, describe in self._describe.items()}
        now = self._clock()
        side["keyed_turns"] = [
            described_keyed_write(session_id, kept, now=now)
            for session_id in active_sessions
            for kept in await self._active.keyed_writes(session_id, owner=owner)
        ]
        side["data_keys"] = await self._keys.describe(owner)
        return side

    async def _transcripts(self, owner: str, sessions: list[tuple[str, bool]]) -> AsyncIterator[Transcript]:
        for session_id, is_active in sessions:
            transcript = None
            if is_active:
                loaded = await self._active.load(session_id, owner=owner)
                transcript = loaded.value if isinstance(loaded, Ok) else None
            if transcript is None:  # archived, or archived since it was listed
                transcript = await self._archive_service.fetch(session_id, owner=owner)
            if transcript is not None:
                yield transcript

    async def _audit_events(self, owner: str, session_ids: list[str]) -> AsyncIterator[AuditEvent]:
        about_sessions = AuditEvent.objects.filter(target_type="session", target__in=session_ids)
        async for event in _rows(about_sessions.order_by("at", "id")):
            yield event
        async for event in _rows(AuditEvent.objects.filter(target_type="owner", target=owner).order_by("at", "id")):
            yield event

    async def erase(self, owner: str, *, actor: str) -> ErasureReceipt:
        """Erase everything about `owner`: their data key first (so every copy of their
        archives, backups included, is unreadable from that moment), then the archived
        objects, the active sessions, and the session records (left as content-free tombstones
        for the auditors). Running it again after a
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
            erased_at = self._clock()
            records = await sync_to_async(erase_records)(SessionRecord.objects.filter(owner=owner), at=erased_at)
        receipt = ErasureReceipt(
            id=str(uuid.uuid4()),
            erased_at=erased_at,
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
        async for session in self._active_sessions(owner):
            yield session.id

    async def _active_sessions(self, owner: str) -> AsyncIterator[ChatSession]:
        cursor: str | None = None
        while True:
            page = await self._active.list_by_owner(owner, limit=100, cursor=cursor)
            for session in page.sessions:
                yield session
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


async def _rows(query: QuerySet[Row]) -> AsyncIterator[Row]:
    """The query's rows, fetched a chunk at a time rather than all at once."""
    async for row in query.aiterator(chunk_size=_ROWS_PER_QUERY):
        yield row


def receipt_details(receipt: ErasureReceipt) -> dict[str, Any]:
    return {
        "receipt_id": receipt.id,
        "erased_at": receipt.erased_at.isoformat(),
        "active_sessions": receipt.active_sessions,
        "archived_sessions": receipt.archived_sessions,
        "session_records": receipt.session_records,
        "data_key_destroyed": receipt.data_key_destroyed,
    }
