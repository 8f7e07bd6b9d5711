"""The auditors' overview: the data-protection figures, as tables and server-drawn SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from audit.models import AuditEvent
from core.svg_charts import bar_chart
from sessions_app.models import SessionRecord
from tests.admin_console import SECRET_WORDS, a_session, auditor, end_session, erase_owner, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("api_settings")]
OVERVIEW = "/admin/overview/"


def figure(page: str, label: str) -> str:
    """The table cell after `label` in the page's status table."""
    row = page[page.index(f"<tr><td>{label}</td>") :]
    return row[len(f"<tr><td>{label}</td><td>") : row.index("</td></tr>")]


def test_the_overview_counts_sessions_erasures_purges_and_transcript_views(settings: SettingsWrapper) -> None:
    settings.ARCHIVE_RETENTION_DAYS = 30
    kept, old, gone = a_session("o_alice"), a_session("o_bob"), a_session("o_erin")
    end_session(old, "o_bob")
    SessionRecord.objects.filter(id=old).update(archived_at=datetime.now(UTC) - timedelta(days=25))
    erase_owner("o_erin")
    carol = auditor()
    for _ in range(3):
        carol.post(f"/admin/sessions_app/sessionrecord/{kept}/transcript/", {"reason": "complaint number 5"})

    page = carol.get(OVERVIEW).content.decode()

    assert (figure(page, "active"), figure(page, "archived"), figure(page, "erased")) == ("1", "1", "1")
    assert SessionRecord.objects.filter(status="erased").count() == 1  # the trail's count and the tombstones agree
    assert "Archives due for purge in the next 7 days: 1" in page and old in page
    receipt = AuditEvent.objects.get(action="owner.erase").details["receipt_id"]
    assert "Erasure requests served in the last 30 days: 1" in page and receipt in page and "o_erin" in page
    assert "<tr><td><a" in page and "auditor:carol</a></td><td>3</td>" in page
    assert page.count('<svg class="chart" role="img"') == 2 and "<script" not in page.split("<h1")[1]
    assert SECRET_WORDS not in page and gone not in page


def test_sessions_left_idle_past_the_threshold_show_as_overdue(settings: SettingsWrapper) -> None:
    settings.ARCHIVE_IDLE_SECONDS = 0
    settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS = 0
    a_session("o_alice")
    a_session("o_bob")

    page = auditor().get(OVERVIEW).content.decode()

    assert '<span class="figure">2</span> sessions idle past the archive threshold' in page


def test_the_overview_is_for_those_who_see_sessions_and_the_trail() -> None:
    assert staff("clerk").get(OVERVIEW).status_code == 403
    assert staff("half", "view_sessionrecord").get(OVERVIEW).status_code == 403
    index = auditor().get("/admin/").content.decode()
    assert f'href="{OVERVIEW}"' in index


def test_a_chart_escapes_its_labels_and_scales_to_the_largest_value() -> None:
    chart = str(bar_chart("Views", [("<script>x</script>", 10), ("b", 5), ("c", 0)]))

    assert "<script>" not in chart and "&lt;script&gt;" in chart
    assert 'width="260"' in chart and 'width="130"' in chart and 'width="0"' in chart
    assert 'aria-label="Views: &lt;script&gt;x&lt;/script&gt;: 10, b: 5, c: 0"' in chart
