"""The figures a data-protection officer is asked for, read from the session records, the active
store's activity index and the audit trail; never a session's content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count

from archive.scheduler import overdue_threshold
from audit.models import AuditEvent
from sessions_app.public import SessionRecord, get_archiver_store

PURGE_HORIZON = timedelta(days=7)
ERASURE_WINDOW = timedelta(days=30)
# The page lists this many of each; the counts above the tables are exact.
LISTED = 50


@dataclass(frozen=True, slots=True)
class Overview:
    at: datetime
    by_status: list[tuple[str, int]]  # active, ended, archived, purged, erased
    overdue: int | None  # None: the active store did not answer
    purge_due: list[tuple[str, str, datetime]]  # (session id, owner, purge due at)
    purge_due_count: int
    erasures: list[dict[str, Any]]  # the receipts of owner erasures in the window
    erasure_count: int
    views_by_auditor: list[tuple[str, int]]


async def overview(*, now: datetime) -> Overview:
    retention = timedelta(days=settings.ARCHIVE_RETENTION_DAYS)
    counts = {
        row["status"]: row["n"]
        async for row in SessionRecord.objects.values("status").annotate(n=Count("id")).order_by()
    }
    by_status = [
        (status, counts.get(status, 0))
        for status in SessionRecord.Status.values
        if status != SessionRecord.Status.ERASED
    ]
    by_status.append(("erased", await _erased_sessions()))  # from the trail, not the tombstones: see there
    due = SessionRecord.objects.filter(
        status=SessionRecord.Status.ARCHIVED, archived_at__lt=now + PURGE_HORIZON - retention
    ).order_by("archived_at")
    purge_due = [(str(r.id), r.owner, r.archived_at + retention) async for r in due[:LISTED] if r.archived_at]
    erasures = AuditEvent.objects.filter(action="owner.erase", outcome="success", at__gte=now - ERASURE_WINDOW)
    views = (
        AuditEvent.objects.filter(action="transcript.view")
        .values("actor")
        .annotate(n=Count("id"))
        .order_by("-n", "actor")[:LISTED]
    )
    return Overview(
        at=now,
        by_status=by_status,
        overdue=await _overdue(now),
        purge_due=purge_due,
        purge_due_count=await due.acount(),
        erasures=[{"at": e.at, "owner": e.target, **e.details} async for e in erasures.order_by("-at")[:LISTED]],
        erasure_count=await erasures.acount(),
        views_by_auditor=[(row["actor"], row["n"]) async for row in views],
    )


async def _erased_sessions() -> int:
    """Erased sessions as the trail counts them: one event per session erased alone and one receipt
    (with its count of records) per owner erased. Each such record is now a tombstone, so the two
    agree; the trail also counts those erased before tombstones were kept, which left no record."""
    alone = await AuditEvent.objects.filter(action="session.delete", outcome="success").acount()
    receipts = AuditEvent.objects.filter(action="owner.erase", outcome="success").values_list("details", flat=True)
    return alone + sum([int(details.get("session_records", 0)) async for details in receipts])


async def _overdue(now: datetime) -> int | None:
    try:
        return await get_archiver_store().count_idle(before=now - overdue_threshold())
    except Exception:  # noqa: BLE001 - the page shows "unavailable" rather than failing whole
        return None
