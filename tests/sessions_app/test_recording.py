"""The SQL session record as lifecycle events leave it: erasure makes a tombstone that stays one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from django.db import DatabaseError
from opentelemetry import trace

from audit.models import AuditEvent
from sessions_app.domain import ChatSession, SessionStatus
from sessions_app.models import SessionRecord
from sessions_app.recording import DatabaseRecorder, SessionEvent

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_erased_sessions_record_is_a_tombstone_no_later_event_revives() -> None:
    session_id, at = str(uuid.uuid4()), datetime(2026, 5, 1, tzinfo=UTC)
    await SessionRecord.objects.acreate(
        id=session_id, owner="o_alice", status="archived", model="echo", created_at=at, last_activity_at=at,
        archived_at=at, object_name="o_alice/archive.bin", message_count=4, input_tokens=7, output_tokens=9,
    )  # fmt: skip
    recorder = DatabaseRecorder()

    await recorder.record(SessionEvent(action="session.delete", session_id=session_id, owner="o_alice", actor="o"))
    # An archive finishing behind the erasure reports its object: the tombstone stays one.
    late = SessionEvent(
        action="session.archive", session_id=session_id, owner="o_alice", actor="scheduler",
        status="archived", archived_at=at, object_name="o_alice/late.bin",
    )  # fmt: skip
    await recorder.record(late)

    record = await SessionRecord.objects.aget(id=session_id)
    assert (record.status, record.object_name, record.archived_at) == ("erased", "", at)
    assert record.erased_at is not None
    assert (record.owner, record.model, record.message_count, record.input_tokens) == ("o_alice", "echo", 4, 7)
    assert await AuditEvent.objects.filter(target=session_id, action="session.archive").aexists()  # still audited


def creation(owner: str = "o_alice", model: str = "echo") -> SessionEvent:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    session = ChatSession(
        id=str(uuid.uuid4()), owner=owner, status=SessionStatus.ACTIVE, model=model, system_prompt="secret prompt",
        metadata={}, created_at=at, last_activity_at=at,
    )  # fmt: skip
    return SessionEvent(
        action="session.create", session_id=session.id, owner=owner, actor=f"owner:{owner}", session=session
    )


async def test_concurrent_creations_each_commit_their_record_and_audit_event_before_returning() -> None:
    recorder = DatabaseRecorder()
    events = [creation() for _ in range(40)]

    await asyncio.gather(*(recorder.record(event) for event in events))

    ids = {event.session_id for event in events}
    records = [r async for r in SessionRecord.objects.filter(id__in=ids)]
    assert {str(r.id) for r in records} == ids
    assert {(r.owner, r.status, r.model, r.message_count) for r in records} == {("o_alice", "active", "echo", 0)}
    audited = [e async for e in AuditEvent.objects.filter(target__in=ids, action="session.create")]
    assert sorted(e.target for e in audited) == sorted(ids)
    assert {(e.actor, e.owner, e.target_type) for e in audited} == {("owner:o_alice", "o_alice", "session")}


async def test_a_creation_whose_row_is_refused_fails_alone() -> None:
    recorder = DatabaseRecorder()
    # A row every database refuses (SQLite lets a value run past its column's length).
    good, bad = [creation() for _ in range(5)], creation(model=None)  # type: ignore[arg-type]

    results = await asyncio.gather(*(recorder.record(e) for e in [*good, bad]), return_exceptions=True)

    assert results[:5] == [None] * 5 and isinstance(results[5], DatabaseError)
    assert await SessionRecord.objects.filter(id__in=[e.session_id for e in good]).acount() == 5
    assert not await SessionRecord.objects.filter(id=bad.session_id).aexists()
    assert not await AuditEvent.objects.filter(target=bad.session_id).aexists()


async def test_a_creation_whose_caller_gives_up_is_still_recorded() -> None:
    recorder = DatabaseRecorder()
    abandoned, later = creation(), creation()
    task = asyncio.create_task(recorder.record(abandoned))
    await asyncio.sleep(0)  # queued
    task.cancel()

    await recorder.record(later)  # written after (or with) the abandoned one

    assert await SessionRecord.objects.filter(id=abandoned.session_id).aexists()
    assert await AuditEvent.objects.filter(target=abandoned.session_id, action="session.create").aexists()


async def test_a_creations_audit_event_carries_its_callers_trace_id(span_exporter: object) -> None:
    event = creation()

    with trace.get_tracer(__name__).start_as_current_span("request") as span:
        await DatabaseRecorder().record(event)

    audited = await AuditEvent.objects.aget(target=event.session_id)
    assert audited.trace_id == format(span.get_span_context().trace_id, "032x")
