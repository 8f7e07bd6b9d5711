"""The audit trail in the auditors' console: found by action, actor, owner, session and date, and
exported as CSV with the same filters (streamed, capped, safe to open in a spreadsheet)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse

from audit import admin_export
from audit.models import AuditEvent
from audit.services import audit_sync
from sessions_app.models import SessionRecord
from tests.admin_console import SECRET_WORDS, a_session, auditor, end_session, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("api_settings")]
LIST = "/admin/audit/auditevent/"
EXPORT = "/admin/audit/auditevent/export.csv"


def rows_of(response: StreamingHttpResponse) -> list[dict[str, str]]:
    assert response.is_async  # streamed as it is read from the database, under ASGI too

    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])  # type: ignore[union-attr]

    return list(csv.DictReader(io.StringIO(async_to_sync(read)().decode())))


def test_events_are_found_by_action_actor_owner_session_and_date() -> None:
    alices, bobs = a_session("o_alice"), a_session("o_bob")
    end_session(alices, "o_alice")  # archived by the owner's end: the event names the owner
    carol = auditor()
    carol.post(f"/admin/sessions_app/sessionrecord/{bobs}/transcript/", {"reason": "complaint number 12"})
    today = datetime.now(UTC).date().isoformat()

    by_owner = carol.get(LIST, {"owner": "o_alice"}).content.decode()
    by_session = carol.get(LIST, {"session": bobs}).content.decode()
    by_actor = carol.get(LIST, {"actor": "carol"}).content.decode()
    by_action = carol.get(LIST, {"action__exact": "session.archive"}).content.decode()
    today_only = carol.get(LIST, {"at_from": today, "at_to": today}).content.decode()
    long_ago = carol.get(LIST, {"at_to": "2001-01-01"}).content.decode()

    assert alices in by_owner and bobs not in by_owner and "session.archive" in by_owner
    assert bobs in by_session and alices not in by_session and "transcript.view" in by_session
    assert "transcript.view" in by_actor and "admin.sign_in" in by_actor and "2 audit events" in by_actor
    assert alices in by_action and bobs not in by_action
    assert alices in today_only and bobs in today_only
    assert "0 audit events" in long_ago
    for page in (by_owner, by_session, by_actor, by_action, today_only):
        assert SECRET_WORDS not in page


def test_the_scheduler_archiving_an_owners_session_is_found_by_that_owner() -> None:
    session_id = a_session("o_alice")
    record = SessionRecord.objects.get(id=session_id)
    audit_sync(actor="scheduler", action="session.archive", target_type="session", target=session_id, owner="o_alice")
    audit_sync(actor="operator", action="owner.erase", target_type="owner", target="o_alice")

    owners = set(AuditEvent.objects.values_list("owner", flat=True))

    assert owners == {record.owner}  # create and turn by the owner, archive by the scheduler, erase of the owner


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"session": "not-a-session"}, "a session id looks like"),
        ({"session": "s" * 3000}, "at most 200 characters"),
        ({"at_from": "01/02/2026"}, "is not a day"),
        ({"actor": "a" * 10_000}, "at most 200 characters"),
    ],
)
def test_bad_filters_are_refused_clearly_in_the_list_and_the_export(query: dict[str, str], problem: str) -> None:
    carol = auditor()

    listed, exported = carol.get(LIST, query), carol.get(EXPORT, query)

    for response in (listed, exported):
        assert response.status_code == 400 and problem in response.content.decode()
        assert b"Traceback" not in response.content
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_the_export_has_the_lists_filters_and_is_itself_recorded() -> None:
    alices, bobs = a_session("o_alice"), a_session("o_bob")
    carol = auditor()

    response = carol.get(EXPORT, {"owner": "o_bob"})

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-events-')
    rows = rows_of(response)
    assert rows and {row["owner"] for row in rows} == {"o_bob"} and {row["target"] for row in rows} == {bobs}
    assert list(rows[0]) == list(admin_export.COLUMNS)
    export = AuditEvent.objects.get(action="audit.export")
    assert export.actor == "auditor:carol" and "owner=o_bob" in export.details["filters"]
    assert alices not in str([row.values() for row in rows])


def test_cells_that_would_run_as_spreadsheet_formulas_are_quoted() -> None:
    for hostile in ('=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tx"):
        audit_sync(actor=hostile, action="test.hostile", target_type="owner", target=hostile)
    audit_sync(actor="operator", action="test.plain", target_type="owner", target="plain-1")

    rows = rows_of(auditor().get(EXPORT, {"action__exact": "test.hostile"}))

    assert len(rows) == 5
    for row in rows:
        assert row["actor"].startswith("'") and row["target"].startswith("'") and row["owner"].startswith("'")
    assert admin_export.safe_cell("plain-1") == "plain-1" and admin_export.safe_cell("a=b") == "a=b"


def test_the_export_stops_at_its_row_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(5):
        audit_sync(actor="operator", action="test.many", target_type="owner", target=f"o_{n}")
    monkeypatch.setattr(admin_export, "EXPORT_ROW_CAP", 3)

    response = auditor().get(EXPORT, {"action__exact": "test.many"})

    assert len(rows_of(response)) == 3 and response["X-Export-Row-Cap"] == "3"


def test_only_auditors_export() -> None:
    assert staff("clerk", "view_sessionrecord").get(EXPORT).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.export").exists()
