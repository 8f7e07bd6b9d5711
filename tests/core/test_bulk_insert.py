"""`insert_new` writes rows as `bulk_create` would: every column, JSON whole, conflicts skipped when asked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import IntegrityError
from django.forms.models import model_to_dict

from audit.models import AuditEvent
from core.bulk_insert import insert_new
from sessions_app.models import SessionRecord

pytestmark = pytest.mark.django_db

AT = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def record(**overrides: object) -> SessionRecord:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()), "owner": "o_alice", "status": "archived", "model": "echo", "created_at": AT,
        "last_activity_at": AT, "archived_at": AT, "object_name": "o_alice/x.bin", "message_count": 4,
        "input_tokens": 2**40, "output_tokens": 9,
    }  # fmt: skip
    return SessionRecord(**(values | overrides))


def test_every_column_is_written_as_given_and_auto_now_is_filled() -> None:
    rows = [record(), record(owner="o_bob", archived_at=None, object_name="")]

    insert_new(rows)

    for row in rows:
        stored = SessionRecord.objects.get(id=row.id)
        assert model_to_dict(stored) == model_to_dict(row) | {"id": uuid.UUID(row.id)}
        assert stored.updated_at is not None and stored.erased_at is None


def test_json_is_stored_whole_and_ids_are_the_databases() -> None:
    details = {"reason": 'it\'s "quoted"\n', "counts": [1, 2.5, None], "nested": {"ok": True}}
    events = [AuditEvent(at=AT, actor="scheduler", action="session.purge", target_type="session", target=f"s{n}",
                         owner="o_alice", trace_id="ab" * 16, details=details) for n in range(3)]  # fmt: skip

    insert_new(events)

    stored = list(AuditEvent.objects.filter(action="session.purge").order_by("id"))
    assert [e.target for e in stored] == ["s0", "s1", "s2"]
    assert all(e.details == details and e.at == AT and e.outcome == "success" for e in stored)
    assert len({e.id for e in stored}) == 3


def test_a_conflict_is_skipped_when_asked_and_refused_otherwise() -> None:
    first = record()
    insert_new([first])
    again, other = record(id=first.id, owner="o_mallory"), record()

    insert_new([again, other], ignore_conflicts=True)

    assert SessionRecord.objects.get(id=first.id).owner == "o_alice"  # kept
    stored = SessionRecord.objects.get(id=other.id)  # written whole, every column as given
    assert model_to_dict(stored) == model_to_dict(other) | {"id": uuid.UUID(other.id)}
    with pytest.raises(IntegrityError):
        insert_new([record(id=first.id)])


def test_a_row_that_breaks_another_constraint_is_refused_even_when_conflicts_are_skipped() -> None:
    """Skipping conflicts skips only a row already there: on every database (SQLite's INSERT OR
    IGNORE would have dropped this one without a word)."""
    good, bad = record(), record(model=None)

    with pytest.raises(IntegrityError):
        insert_new([good, bad], ignore_conflicts=True)
