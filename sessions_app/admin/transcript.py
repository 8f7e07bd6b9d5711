"""Reading a session's conversation: only after the auditor states why, and recorded each time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from audit.services import audit
from core.admin_actor import admin_actor
from core.result import Ok
from sessions_app.models import SessionRecord
from sessions_app.wiring import get_session_manager

if TYPE_CHECKING:
    from sessions_app.admin import SessionRecordAdmin

# Messages shown at once: a long session is read a page at a time, never loaded whole.
TRANSCRIPT_PAGE = 100
# A reason an auditor could defend later: "x" or "check" is not one.
MIN_REASON_LENGTH = 10


class TranscriptReasonForm(forms.Form):
    reason = forms.CharField(
        min_length=MIN_REASON_LENGTH,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=(
            f"Why you need to read this conversation (at least {MIN_REASON_LENGTH} characters). "
            "It is kept in the audit trail with your name."
        ),
    )
    offset = forms.IntegerField(min_value=0, max_value=10**9, required=False, widget=forms.HiddenInput)


def transcript_view(model_admin: SessionRecordAdmin, request: HttpRequest, record_id: str) -> HttpResponse:
    """Shows a conversation only after the auditor states why, and records who read it. An
    archived session is read from the archive (decrypted), an active one from the active store:
    the session manager's `session_get` does either, as it does for the owner."""
    if not request.user.has_perm("sessions_app.view_transcript"):
        raise PermissionDenied
    record = get_object_or_404(SessionRecord, pk=record_id)
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "record": record,
        "opts": SessionRecord._meta,
        "source": "the archive (decrypted)" if record.status == SessionRecord.Status.ARCHIVED else "the active store",
    }
    if record.status == SessionRecord.Status.ERASED:  # nothing left to read: no reason asked, no store read
        context["erased"] = True
        return TemplateResponse(request, "admin/sessions_app/sessionrecord/transcript.html", context)
    form = TranscriptReasonForm(request.POST) if request.method == "POST" else TranscriptReasonForm()
    if form.is_bound and form.is_valid():
        reason, offset = form.cleaned_data["reason"], form.cleaned_data["offset"] or 0
        loaded = async_to_sync(get_session_manager().session_get)(
            owner=record.owner, session_id=str(record.pk), offset=offset, limit=TRANSCRIPT_PAGE
        )
        async_to_sync(audit)(  # every page read is its own event, with the same reason
            actor=admin_actor(request.user),
            action="transcript.view",
            target_type="session",
            target=str(record.pk),
            owner=record.owner,
            outcome="success" if isinstance(loaded, Ok) else "failure",
            details={"reason": reason, "offset": offset},
        )
        if isinstance(loaded, Ok):
            shown, total = len(loaded.value.messages), loaded.value.session.message_count
            context["page"] = {"first": offset + 1, "last": offset + shown, "total": total}
            if offset + shown < total:
                context["next_form"] = TranscriptReasonForm(initial={"reason": reason, "offset": offset + shown})
            context["transcript"] = loaded.value
        else:
            context["unavailable"] = True
    context["form"] = form
    return TemplateResponse(request, "admin/sessions_app/sessionrecord/transcript.html", context)
