"""The audit trail as CSV: streamed a chunk of rows at a time, capped, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse

from audit.services import audit_sync
from core.admin_actor import admin_actor

if TYPE_CHECKING:
    from audit.admin import AuditEventAdmin

# More than an auditor reads; beyond it, narrow the filters (the response says so in a header).
EXPORT_ROW_CAP = 100_000
COLUMNS = ("at", "actor", "action", "target_type", "target", "owner", "outcome", "trace_id", "details")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_csv(model_admin: AuditEventAdmin, request: HttpRequest) -> HttpResponseBase:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    problems = model_admin.query_problems(request.GET)
    events = None
    try:
        if not problems:
            events = model_admin.get_changelist_instance(request).queryset
    except IncorrectLookupParameters:
        problems.append("Some filter values were not understood.")
    if events is None or problems:
        context = {**model_admin.admin_site.each_context(request), "problems": problems, "back": request.path}
        return TemplateResponse(request, "core/admin_bad_query.html", context, status=400)
    audit_sync(
        actor=admin_actor(request.user),
        action="audit.export",
        target_type="audit",
        target="events",
        details={"filters": request.GET.urlencode()[:500]},
    )
    # values(), not values_list(): the latter's aiterator() runs its query in the event loop (Django 5.2).
    rows = events.values(*COLUMNS)[:EXPORT_ROW_CAP]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-events-{stamp}.csv"'
    response["X-Export-Row-Cap"] = str(EXPORT_ROW_CAP)
    return response


async def _lines(rows: Any) -> AsyncIterator[str]:
    # Async: under ASGI, Django would read a synchronous iterator whole before sending any of it.
    yield _line(COLUMNS)
    async for row in rows.aiterator(chunk_size=500):
        yield _line(_cells(row))


def _cells(row: dict[str, Any]) -> list[str]:
    at, details = row["at"].isoformat(), json.dumps(row["details"], sort_keys=True, ensure_ascii=False)
    return [at, *(str(row[name]) for name in COLUMNS[1:-1]), details]


def _line(cells: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([safe_cell(cell) for cell in cells])
    return buffer.getvalue()


def safe_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading quote."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
