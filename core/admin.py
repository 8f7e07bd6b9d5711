"""The admin site itself (its titles, its throttled login) and `ReadOnlyAdmin` for every app's
records (the audit trail's is in audit/admin.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from core.admin_login import ThrottledAdminAuthenticationForm

admin.site.site_header = "LLM Session Gateway: audit"
admin.site.site_title = "LLM Session Gateway"
admin.site.login_template = "core/admin_login.html"
admin.site.login_form = ThrottledAdminAuthenticationForm


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Auditors look; nobody edits the record of what happened."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
