"""Session records in the Django admin: found by metadata, looked at with their lifecycle, and
read only through an explicit, audited transcript view (sessions_app/admin/transcript.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin, abbreviated
from core.admin_filters import date_range, text_value
from sessions_app.admin.timeline import live_session, session_timeline
from sessions_app.admin.transcript import transcript_view
from sessions_app.models import SessionRecord


@admin.register(SessionRecord)
class SessionRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "id", abbreviated("owner", "owner"), "status", "model", "created_at", "last_activity_at", "archived_at",
        "message_count", "input_tokens", "output_tokens",
    ]  # fmt: skip
    list_filter = [
        "status",
        "model",
        text_value("owner", "owner pseudonym", lambda value: Q(owner=value)),
        date_range("created_at", "created"),
        date_range("last_activity_at", "last activity"),
    ]
    search_fields = ["id", "owner", "model"]
    search_help_text = "Part of a session id, an owner pseudonym or a model."
    fieldsets = [
        ("Session", {"fields": ["id", "owner", "status", "model", "object_name"]}),
        ("When", {"fields": ["created_at", "last_activity_at", "archived_at", "erased_at", "updated_at"]}),
        ("Usage", {"fields": ["message_count", "input_tokens", "output_tokens"]}),
        ("Content", {"fields": ["transcript_link"]}),
    ]
    readonly_fields = ["transcript_link"]

    @admin.display(description="Transcript")
    def transcript_link(self, record: SessionRecord) -> str:
        if record.status == SessionRecord.Status.ERASED:
            return "None: the session was erased"
        url = reverse("admin:sessions_app_sessionrecord_transcript", args=[record.pk])
        return format_html('<a href="{}">Open the transcript (your reading is audited)</a>', url)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.transcript_view)
        return [
            path("<uuid:record_id>/transcript/", view, name="sessions_app_sessionrecord_transcript"),
            *super().get_urls(),
        ]

    def transcript_view(self, request: HttpRequest, record_id: str) -> HttpResponse:
        return transcript_view(self, request, record_id)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied  # before reading anything about the session
        record = self.get_object(request, object_id)
        live = live_session(record) if record is not None else None
        steps = session_timeline(record, live) if record is not None else []
        extra = {**(extra_context or {}), "timeline": steps, "live": live}
        return super().change_view(request, object_id, form_url, extra)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Sessions erased before tombstones were kept left no record, only their receipts.
        erased = reverse("admin:audit_auditevent_changelist") + "?action__in=session.delete,owner.erase"
        return super().changelist_view(request, {**(extra_context or {}), "erasures_url": erased})
