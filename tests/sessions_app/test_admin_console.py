"""The auditors' console over sessions: finding them by metadata, their page and lifecycle, the
transcript behind a stated reason, and hostile input (forged ids, bad filters) answered cleanly."""

from __future__ import annotations

import logging
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client

from audit.models import AuditEvent
from sessions_app.models import SessionRecord
from sessions_app.wiring import get_session_manager
from tests.admin_console import SECRET_WORDS, a_session, auditor, end_session, erase_owner, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("api_settings")]
LIST = "/admin/sessions_app/sessionrecord/"


def transcript_url(session_id: str) -> str:
    return f"{LIST}{session_id}/transcript/"


def test_sessions_are_found_by_owner_status_and_dates_with_counts() -> None:
    alices, bobs = a_session("o_alice"), a_session("o_bob")
    end_session(alices, "o_alice")
    carol = auditor()
    today = SessionRecord.objects.get(id=bobs).created_at.date().isoformat()

    by_owner = carol.get(LIST, {"owner": "o_bob"}).content.decode()
    archived = carol.get(LIST, {"status__exact": "archived"}).content.decode()
    created_today = carol.get(LIST, {"created_at_from": today, "created_at_to": today}).content.decode()
    active_before = carol.get(LIST, {"last_activity_at_to": "2000-01-01"}).content.decode()
    by_model = carol.get(LIST, {"model__exact": "echo", "o": "-2"}).content.decode()

    assert bobs in by_owner and alices not in by_owner and "1 session record" in by_owner
    assert alices in archived and bobs not in archived
    assert alices in created_today and bobs in created_today and "2 session records" in created_today
    assert alices not in active_before and bobs not in active_before and "0 session records" in active_before
    assert alices in by_model and bobs in by_model
    for page in (by_owner, archived, created_today, by_model):
        assert SECRET_WORDS not in page


def test_a_sessions_page_shows_its_lifecycle_and_usage_without_its_content() -> None:
    session_id = a_session("o_alice")
    end_session(session_id, "o_alice")
    carol = auditor()
    carol.post(transcript_url(session_id), {"reason": "complaint about a reply"})

    page = carol.get(f"{LIST}{session_id}/change/").content.decode()

    assert SECRET_WORDS not in page
    timeline = page[page.index('id="timeline"') :]
    for step in ("Created", "Turns (last activity)", "Ended", "Archived", "Transcript read"):
        assert step in timeline
    assert "owner:o_alice" in timeline and "auditor:carol" in timeline
    assert "reason: complaint about a reply" in timeline
    assert timeline.index("Created") < timeline.index("Archived") < timeline.index("Transcript read")


def test_an_active_sessions_page_shows_its_turns_as_the_active_store_holds_them_now() -> None:
    session_id = a_session("o_alice")  # one turn: the record still says 0 messages

    page = auditor().get(f"{LIST}{session_id}/change/").content.decode()

    assert SessionRecord.objects.get(id=session_id).message_count == 0
    assert "2 messages" in page[page.index('id="live-usage"') :] and "Turns (last activity)" in page
    assert SECRET_WORDS not in page


def test_an_archived_transcript_is_read_from_the_archive_and_the_reading_recorded() -> None:
    session_id = a_session("o_alice")
    end_session(session_id, "o_alice")

    shown = auditor("dora").post(transcript_url(session_id), {"reason": "subject access request 7"}).content.decode()

    assert SECRET_WORDS in shown and "Read from the archive (decrypted)" in shown
    assert "Your reading of this conversation has been recorded in the audit trail" in shown
    event = AuditEvent.objects.get(action="transcript.view")
    assert (event.actor, event.target, event.owner, event.details["reason"]) == (
        "auditor:dora",
        session_id,
        "o_alice",
        "subject access request 7",
    )


@pytest.mark.parametrize("reason", [None, "", "too short", "         x         "])
def test_no_transcript_and_no_audit_event_without_a_real_reason(reason: str | None) -> None:
    session_id = a_session()

    response = auditor().post(transcript_url(session_id), {} if reason is None else {"reason": reason})

    assert response.status_code == 200 and SECRET_WORDS not in response.content.decode()
    assert "errorlist" in response.content.decode()
    assert not AuditEvent.objects.filter(action="transcript.view").exists()


def test_forged_and_vanished_ids_are_404_without_a_trace() -> None:
    session_id = a_session()
    carol = auditor()
    nobody = str(uuid.uuid4())
    SessionRecord.objects.filter(id=session_id).delete()  # a record gone (as erasure did before tombstones)

    for url in (
        f"{LIST}{nobody}/change/",
        f"{LIST}not-a-uuid/change/",
        f"{LIST}{session_id}/change/",
        f"{LIST}{nobody}/history/",
        transcript_url(nobody),
        transcript_url(session_id),
        f"{LIST}..%2F..%2Fetc/transcript/",
        "/admin/audit/auditevent/999999999/change/",
    ):
        response = carol.get(url, follow=True)
        assert response.status_code == 404, url
        assert b"Traceback" not in response.content
    assert carol.post(transcript_url(nobody), {"reason": "a perfectly good reason"}).status_code == 404
    assert not AuditEvent.objects.filter(action="transcript.view").exists()


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"created_at_from": "yesterday"}, "is not a day (YYYY-MM-DD)"),
        ({"created_at_from": "2026-02-30"}, "is not a day"),
        ({"last_activity_at_to": "9" * 5000}, "is not a day"),
        ({"created_at_from": "2026-05-01", "created_at_to": "2026-04-01"}, "the first day is after the last"),
        ({"owner": "o" * 10_000}, "at most 200 characters"),
        ({"q": "x" * 10_000}, "at most 200 characters"),
        ({"p": "-1"}, "a page number"),
        ({"p": "9" * 40}, "a page number"),
        ({"created_at__gte": "not a date"}, "not understood"),  # a raw lookup Django could not run
        ({"status__exact": "x" * 5000}, ""),  # an unknown status: simply no rows
    ],
)
def test_bad_filter_values_are_a_clear_400_never_a_500(query: dict[str, str], problem: str) -> None:
    a_session()

    response = auditor().get(LIST, query, follow=True)

    body = response.content.decode()
    assert b"Traceback" not in response.content and SECRET_WORDS not in body
    if problem:
        assert response.status_code == 400 and problem in body and "Back to the unfiltered list" in body
    else:
        assert response.status_code == 200 and "0 session records" in body


def test_staff_without_the_auditor_role_see_nothing_of_sessions() -> None:
    session_id = a_session()
    clerk = staff("clerk")

    index = clerk.get("/admin/").content.decode()

    assert "Session records" not in index and "Audit" not in index and "Overview" not in index
    for url in (
        LIST,
        f"{LIST}?created_at_from=bad",
        f"{LIST}{session_id}/change/",
        f"{LIST}{uuid.uuid4()}/change/",
        transcript_url(session_id),
        "/admin/audit/auditevent/",
        "/admin/audit/auditevent/export.csv",
        "/admin/overview/",
    ):
        response = clerk.get(url)
        assert response.status_code == 403, url
        assert b"Traceback" not in response.content and SECRET_WORDS.encode() not in response.content


def test_a_viewer_of_records_without_the_transcript_permission_cannot_read_it() -> None:
    session_id = a_session()

    response = staff("viewer", "view_sessionrecord").post(transcript_url(session_id), {"reason": "a good reason here"})

    assert response.status_code == 403 and not AuditEvent.objects.filter(action="transcript.view").exists()


def test_no_list_offers_to_change_anything_even_to_the_superuser() -> None:
    session_id = a_session()
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", password="pw"))

    for url in (LIST, "/admin/audit/auditevent/", f"{LIST}{session_id}/change/"):
        page = root.get(url).content.decode()
        content = page[page.index('id="content"') :]  # the sidebar offers Users and Groups, which he may edit
        assert 'id="action-toggle"' not in content and "deletelink" not in content and "addlink" not in content
        assert 'value="Save"' not in content
    assert root.post(LIST, {"action": "delete_selected", "_selected_action": [session_id]}).status_code in (200, 302)
    assert SessionRecord.objects.filter(id=session_id).exists()


def test_no_page_writes_message_content_to_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    session_id = a_session()
    end_session(session_id)
    carol = auditor()

    with caplog.at_level(logging.DEBUG):
        carol.get(LIST, {"q": session_id})
        carol.get(f"{LIST}{session_id}/change/")
        carol.post(transcript_url(session_id), {"reason": "reading it for the log test"})
        carol.get("/admin/audit/auditevent/")
        carol.get("/admin/overview/")

    assert caplog.records and SECRET_WORDS not in caplog.text


def test_erased_sessions_are_found_by_status_and_through_their_receipts_in_the_trail() -> None:
    erased, alone, kept = a_session("o_alice"), a_session("o_bob"), a_session("o_bob")
    erase_owner("o_alice")
    async_to_sync(get_session_manager().session_delete)(owner="o_bob", session_id=alone)
    carol = auditor()

    listed = carol.get(LIST).content.decode()
    by_status = carol.get(LIST, {"status__exact": "erased"}).content.decode()
    link = "/admin/audit/auditevent/?action__in=session.delete,owner.erase"
    page = carol.get(link).content.decode()
    receipts = page[page.index('id="result_list"') : page.index("</table>", page.index('id="result_list"'))]

    assert link in listed and erased in listed and "?status__exact=erased" in listed  # offered by the filter
    assert erased in by_status and alone in by_status and kept not in by_status and "2 session records" in by_status
    assert "owner.erase" in receipts and "session.delete" in receipts and "session.create" not in receipts
    assert SECRET_WORDS not in by_status


def test_an_erased_sessions_page_and_transcript_say_it_was_erased_and_read_nothing() -> None:
    session_id = a_session("o_alice")
    end_session(session_id, "o_alice")
    erase_owner("o_alice")
    carol = auditor()
    record = SessionRecord.objects.get(id=session_id)

    page = carol.get(f"{LIST}{session_id}/change/").content.decode()
    shown = carol.get(transcript_url(session_id))
    posted = carol.post(transcript_url(session_id), {"reason": "subject access request 9"})

    assert (record.status, record.object_name, record.model) == ("erased", "", "echo")
    assert record.erased_at is not None and record.message_count == 2
    assert "None: the session was erased" in page and transcript_url(session_id) not in page
    assert SECRET_WORDS not in page
    for response in (shown, posted):
        body = response.content.decode()
        assert response.status_code == 200 and "This session was erased on" in body
        assert "<form" not in body.split('id="content"')[-1] and SECRET_WORDS not in body
    assert not AuditEvent.objects.filter(action="transcript.view").exists()  # nothing was read
