"""Reads of the SQL session records that the archive needs."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from sessions_app.public import SessionRecord, from_ms, member_session_id


async def archived_records(owner: str, *, limit: int, after: str | None) -> list[SessionRecord]:
    """The owner's archived sessions, newest first; `after` is an owner-index member (a cursor)."""
    query = SessionRecord.objects.filter(owner=owner, status=SessionRecord.Status.ARCHIVED)
    if after is not None:
        created = from_ms(after.partition(":")[0])
        query = query.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=member_session_id(after)))
    return [r async for r in query.order_by("-created_at", "-id")[:limit]]


async def expired_records(*, before: datetime, limit: int = 1000) -> list[SessionRecord]:
    query = SessionRecord.objects.filter(status=SessionRecord.Status.ARCHIVED, archived_at__lt=before)
    return [r async for r in query.order_by("archived_at")[:limit]]


async def is_archived(session_id: str, *, owner: str) -> bool:
    return await SessionRecord.objects.filter(
        id=session_id, owner=owner, status=SessionRecord.Status.ARCHIVED
    ).aexists()


async def has_archived(owner: str) -> bool:
    return await SessionRecord.objects.filter(owner=owner, status=SessionRecord.Status.ARCHIVED).aexists()
