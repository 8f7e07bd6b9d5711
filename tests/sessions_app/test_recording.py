"""The SQL session record as lifecycle events leave it: erasure makes a tombstone that stays one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from audit.models import AuditEvent
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
