"""Keeping the SQL record of sessions and the audit trail, off the per-turn path."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, Protocol

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.services import PendingAuditEvent, audit_all_sync, audit_later, audit_sync
from core.bulk_insert import insert_new
from core.per_loop import PerLoop
from sessions_app.domain import ChatSession
from sessions_app.models import SessionRecord


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A lifecycle fact about one session, with who caused it. Never content."""

    action: str  # session.create, session.end, session.archive, session.resume, session.delete, session.purge
    session_id: str
    owner: str
    actor: str
    session: ChatSession | None = None  # the session as it now is; None once erased
    status: str | None = None  # the record's new status, when it is not the session's own
    archived_at: datetime | None = None
    object_name: str | None = None
    outcome: str = "success"
    details: Mapping[str, Any] = field(default_factory=dict)


class SessionRecorder(Protocol):
    """Where lifecycle facts go: the SQL session record and the audit trail."""

    async def record(self, event: SessionEvent) -> None:
        """Apply `event` to the session's record (a tombstone, for erasure) and audit it."""
        ...


class DatabaseRecorder:
    def __init__(self) -> None:
        self._creations = PerLoop(CreationWriter, CreationWriter.close)

    async def record(self, event: SessionEvent) -> None:
        if event.action == "session.create" and event.outcome == "success" and event.session is not None:
            # The busiest event by far, and the simplest: a new id, so no row to update or to find
            # erased. Written with the others pending at the same moment, in one transaction.
            await self._creations().write(_new_record(event.session), _audit_event(event))
            return
        await sync_to_async(_on_a_usable_connection(self._apply))(event)

    @transaction.atomic
    def _apply(self, event: SessionEvent) -> None:
        if event.outcome == "success":
            if event.action == "session.delete":
                erase_records(SessionRecord.objects.filter(id=event.session_id), at=timezone.now())
            elif (event.session is not None or event.status is not None) and not _erased(event.session_id):
                SessionRecord.objects.update_or_create(id=event.session_id, defaults=self._fields(event))
        audit_sync(  # in this transaction: the record and its audit event commit together
            actor=event.actor,
            action=event.action,
            target_type="session",
            target=event.session_id,
            owner=event.owner,  # also when the scheduler acts: an auditor finds it by owner
            outcome=event.outcome,
            details=event.details,
        )

    @staticmethod
    def _fields(event: SessionEvent) -> dict[str, Any]:
        fields: dict[str, Any] = {"owner": event.owner}
        if event.session is not None:
            fields.update(_session_fields(event.session))
        if event.status is not None:
            fields["status"] = event.status
        if event.archived_at is not None or event.action == "session.resume":
            fields["archived_at"] = event.archived_at
        if event.object_name is not None:
            fields["object_name"] = event.object_name
        return fields


def _session_fields(session: ChatSession) -> dict[str, Any]:
    """A session's record columns, as the session now stands."""
    return {
        "status": session.status.value,
        "model": session.model,
        "created_at": session.created_at,
        "last_activity_at": session.last_activity_at,
        "message_count": session.message_count,
        "input_tokens": session.usage.input_tokens,
        "output_tokens": session.usage.output_tokens,
    }


def _new_record(session: ChatSession) -> SessionRecord:
    return SessionRecord(id=session.id, owner=session.owner, **_session_fields(session))


def _audit_event(event: SessionEvent) -> PendingAuditEvent:
    return audit_later(
        actor=event.actor,
        action=event.action,
        target_type="session",
        target=event.session_id,
        owner=event.owner,
        outcome=event.outcome,
        details=event.details,
    )


P = ParamSpec("P")


def _on_a_usable_connection(apply: Callable[P, None]) -> Callable[P, None]:
    """`apply`, after dropping this thread's connection if it broke or expired.

    Called from a consumer, the recorder runs on asgiref's one shared sync thread, whose
    connection lives across requests (CONN_MAX_AGE): no request signal closes it there when it
    breaks or expires, so drop such a one first, as Django does at each request. Not inside a
    transaction (a sync caller's, or a test's), which it would end."""

    def applied(*args: P.args, **kwargs: P.kwargs) -> None:
        if not connection.in_atomic_block:
            close_old_connections()
        apply(*args, **kwargs)

    return applied


@dataclass(slots=True)
class _Creation:
    record: SessionRecord
    audit: PendingAuditEvent
    written: asyncio.Future[None]


class CreationWriter:
    """Group commit for session records: each creation waits for its row and audit event to be
    committed (no reply before that, so a crash loses no accepted session's record), and all
    the creations pending while one transaction runs go in the next, as one INSERT each for the
    records and the audit events. Under load that is one transaction for many sessions instead
    of one each on a single sync thread (about 100 creations/s on PostgreSQL that way).

    One per event loop. The writing runs in a task of its own, so a caller that gives up (a
    cancelled request) neither stops the others' write nor loses its own; the task runs in an
    empty context, so the thread it writes on is asgiref's shared one (or, under
    `async_to_sync`, its caller's thread), never a finished request's."""

    MAX_BATCH = 100

    def __init__(self) -> None:
        self._pending: list[_Creation] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, record: SessionRecord, audit: PendingAuditEvent) -> None:
        """Return once `record` and `audit` are committed; raise what the write raised."""
        loop = asyncio.get_running_loop()
        creation = _Creation(record, audit, loop.create_future())
        self._pending.append(creation)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain(), context=contextvars.Context())
        await asyncio.shield(creation.written)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            try:
                await sync_to_async(_on_a_usable_connection(_insert))(batch)
            except Exception:  # noqa: BLE001 - one at a time: a bad row fails only its own request
                for creation in batch:
                    try:
                        await sync_to_async(_on_a_usable_connection(_insert))([creation])
                    except Exception as exc:  # noqa: BLE001 - the caller raises it
                        _settle(creation.written, exc)
                    else:
                        _settle(creation.written, None)
            else:
                for creation in batch:
                    _settle(creation.written, None)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)


def _settle(future: asyncio.Future[None], failure: Exception | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_result(None)
    else:
        future.set_exception(failure)


@transaction.atomic
def _insert(batch: list[_Creation]) -> None:
    # A new uuid4 cannot name a row already there; were it an erased one's, its tombstone stays.
    insert_new([creation.record for creation in batch], ignore_conflicts=True)
    audit_all_sync([creation.audit for creation in batch])


def erase_records(records: QuerySet[SessionRecord], *, at: datetime) -> int:
    """Turn `records` into tombstones: the auditors' trace of an erasure, keeping only what the
    audit trail holds about the session anyway (id, owner pseudonym, model, times, counts), and
    not the archive object's name. Those erased already keep their time; returns how many were not."""
    live = records.exclude(status=SessionRecord.Status.ERASED)
    return live.update(status=SessionRecord.Status.ERASED, erased_at=at, object_name="")


def _erased(session_id: str) -> bool:
    # Locked to the end of the transaction: a late event (an archive finishing as the session
    # is erased) never brings an erased session's record back.
    status = SessionRecord.objects.select_for_update().filter(id=session_id).values_list("status", flat=True)
    return status.first() == SessionRecord.Status.ERASED


class MemoryRecorder:
    """Keeps events in a list: for unit tests."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    async def record(self, event: SessionEvent) -> None:
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]
