"""The audit trail in the Django admin: read-only, filterable by what an auditor asks about, and
exported as CSV with the same filters."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.db.models import Q
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path

from audit.admin_export import export_csv
from audit.models import AuditEvent
from core.admin import ReadOnlyAdmin, abbreviated
from core.admin_filters import date_range, text_value

# The kinds of actor an auditor may name by name alone ("ada" finds "auditor:ada").
ACTOR_KINDS = ("auditor", "breakglass", "owner")


def _actor(value: str) -> Q:
    return Q(actor=value) | Q(actor__in=[f"{kind}:{value}" for kind in ACTOR_KINDS])


def _session_id(value: str) -> str | None:
    try:
        uuid.UUID(value)
    except ValueError:
        return "a session id looks like 0f8e2c1a-…, 36 characters."
    return None


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    # The rest (target type, trace id, details) on the event's page.
    list_display = [
        "at",
        abbreviated("actor", "actor", keep=32),
        "action",
        "target",
        abbreviated("owner", "owner"),
        "outcome",
    ]
    list_filter = [
        "action",
        "outcome",
        "target_type",
        text_value("actor", "actor", _actor),
        text_value("owner", "owner pseudonym", lambda value: Q(owner=value)),
        text_value("session", "session", lambda value: Q(target_type="session", target=value), check=_session_id),
        date_range("at", "date"),
    ]
    search_fields = ["=actor", "=target", "=owner", "action", "=trace_id"]
    search_help_text = "An actor, a session id, an owner pseudonym or a trace id (exactly), or part of an action."
    ordering = ["-at"]

    def get_urls(self) -> list[URLPattern]:
        export = self.admin_site.admin_view(self.export_view)
        return [path("export.csv", export, name="audit_auditevent_export"), *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The events the list shows with the same filters, search and order, as CSV."""
        return export_csv(self, request)
