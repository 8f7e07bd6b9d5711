"""The admin site itself (its titles, its throttled login) and `ReadOnlyAdmin` for every app's
records (the audit trail's is in audit/admin.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ERROR_FLAG, PAGE_VAR, SEARCH_VAR
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.template.response import TemplateResponse
from django.utils.html import format_html

from core.admin_filters import MAX_VALUE_LENGTH, CheckedFilter
from core.admin_login import ThrottledAdminAuthenticationForm

admin.site.site_header = "LLM Session Gateway: audit"
admin.site.site_title = "LLM Session Gateway"
admin.site.login_template = "core/admin_login.html"
admin.site.enable_nav_sidebar = False  # the lists are wide: a session's id, an owner's pseudonym
admin.site.index_template = "core/admin_index.html"  # adds the overview (archive/admin_overview.py)
admin.site.login_form = ThrottledAdminAuthenticationForm


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Auditors look; nobody edits the record of what happened. A list's filters are checked
    before they reach a query (a clear 400 page); a record that is not there is a 404."""

    actions = None  # not even "delete selected"
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        problems = self.query_problems(request.GET)
        if ERROR_FLAG in request.GET:  # Django's redirect after a lookup it could not run
            problems.append("Some filter values were not understood.")
        if problems:
            context = {**self.admin_site.each_context(request), "problems": problems, "back": request.path}
            context["title"] = "Those filters cannot be applied"
            return TemplateResponse(request, "core/admin_bad_query.html", context, status=400)
        return super().changelist_view(request, extra_context)

    def query_problems(self, query: QueryDict) -> list[str]:
        found: list[str] = []
        for spec in self.list_filter:
            if isinstance(spec, type) and issubclass(spec, CheckedFilter):
                found += spec.problems(query)
        if len(query.get(SEARCH_VAR, "")) > MAX_VALUE_LENGTH:
            found.append(f"Search: at most {MAX_VALUE_LENGTH} characters.")
        page = query.get(PAGE_VAR, "1")
        if not (page.isdigit() and len(page) <= 9):
            found.append("Page: a page number.")
        return found

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._must_exist(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        self._must_exist(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def _must_exist(self, request: HttpRequest, object_id: str) -> None:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if self.get_object(request, object_id) is None:  # Django would redirect to the index
            raise Http404


def abbreviated(field: str, description: str, *, keep: int = 14) -> Any:
    """A list column showing the start of a long value (a pseudonym), the whole of it on hover,
    still sorted by the field."""

    @admin.display(description=description, ordering=field)
    def column(obj: Any) -> str:
        value = str(getattr(obj, field))
        if len(value) <= keep + 1:
            return value
        return format_html('<abbr title="{}">{}…</abbr>', value, value[:keep])

    return column
