"""Session records in the Django admin; transcripts only through an explicit, audited view."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audit.services import audit
from core.admin import ReadOnlyAdmin
from core.admin_actor import admin_actor
from core.result import Ok
from sessions_app.models import SessionRecord
from sessions_app.wiring import get_session_manager

# Messages shown at once: a long session is read a page at a time, never loaded whole.
TRANSCRIPT_PAGE = 100


class TranscriptReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why you need to read this conversation. It is kept in the audit trail with your name.",
    )
    offset = forms.IntegerField(min_value=0, max_value=10**9, required=False, widget=forms.HiddenInput)


@admin.register(SessionRecord)
class SessionRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "id", "owner", "status", "model", "created_at", "last_activity_at", "archived_at", "message_count",
        "input_tokens", "output_tokens",
    ]  # fmt: skip
    list_filter = ["status", "model", "created_at", "archived_at"]
    search_fields = ["id", "owner", "model"]
    date_hierarchy = "created_at"
    readonly_fields = ["transcript_link"]

    @admin.display(description="Transcript")
    def transcript_link(self, record: SessionRecord) -> str:
        url = reverse("admin:sessions_app_sessionrecord_transcript", args=[record.pk])
        return format_html('<a href="{}">Open the transcript (your reading is audited)</a>', url)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.transcript_view)
        return [
            path("<uuid:record_id>/transcript/", view, name="sessions_app_sessionrecord_transcript"),
            *super().get_urls(),
        ]

    def transcript_view(self, request: HttpRequest, record_id: str) -> HttpResponse:
        """Shows a conversation only after the auditor states why, and records who read it."""
        if not request.user.has_perm("sessions_app.view_transcript"):
            raise PermissionDenied
        record = get_object_or_404(SessionRecord, pk=record_id)
        context: dict[str, Any] = {**self.admin_site.each_context(request), "record": record, "opts": self.model._meta}
        form = TranscriptReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            offset = form.cleaned_data["offset"] or 0
            loaded = async_to_sync(get_session_manager().session_get)(
                owner=record.owner, session_id=str(record.pk), offset=offset, limit=TRANSCRIPT_PAGE
            )
            outcome = "success" if isinstance(loaded, Ok) else "failure"
            async_to_sync(audit)(  # every page read is its own event, with the same reason
                actor=admin_actor(request.user),
                action="transcript.view",
                target_type="session",
                target=str(record.pk),
                outcome=outcome,
                details={"reason": form.cleaned_data["reason"], "offset": offset},
            )
            if isinstance(loaded, Ok):
                shown = len(loaded.value.messages)
                total = loaded.value.session.message_count
                context["page"] = {"first": offset + 1, "last": offset + shown, "total": total}
                if offset + shown < total:
                    context["next_form"] = TranscriptReasonForm(
                        initial={"reason": form.cleaned_data["reason"], "offset": offset + shown}
                    )
            context["transcript"] = loaded.value if isinstance(loaded, Ok) else None
            context["unavailable"] = not isinstance(loaded, Ok)
        context["form"] = form
        return TemplateResponse(request, "admin/sessions_app/sessionrecord/transcript.html", context)
