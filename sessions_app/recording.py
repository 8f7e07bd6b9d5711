"""Keeping the SQL record of sessions and the audit trail, off the per-turn path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.services import audit_sync
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
    async def record(self, event: SessionEvent) -> None:
        await sync_to_async(self._apply_on_a_usable_connection)(event)

    def _apply_on_a_usable_connection(self, event: SessionEvent) -> None:
        # Called from a consumer, this runs on asgiref's one shared sync thread, whose connection
        # lives across requests (CONN_MAX_AGE): no request signal closes it there when it breaks
        # or expires, so drop such a one first, as Django does at each request. Not inside a
        # transaction (a sync caller's, or a test's), which it would end.
        if not connection.in_atomic_block:
            close_old_connections()
        self._apply(event)

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
            session = event.session
            fields.update(
                status=session.status.value,
                model=session.model,
                created_at=session.created_at,
                last_activity_at=session.last_activity_at,
                message_count=session.message_count,
                input_tokens=session.usage.input_tokens,
                output_tokens=session.usage.output_tokens,
            )
        if event.status is not None:
            fields["status"] = event.status
        if event.archived_at is not None or event.action == "session.resume":
            fields["archived_at"] = event.archived_at
        if event.object_name is not None:
            fields["object_name"] = event.object_name
        return fields


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
