"""The audit trail in the Django admin: read-only, filterable, searchable."""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditEvent
from core.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "target_type", "target", "outcome", "trace_id"]
    list_filter = ["action", "outcome", "target_type", "at"]
    search_fields = ["actor", "target", "action", "trace_id"]
    date_hierarchy = "at"
    ordering = ["-at"]
