"""The auditors' overview page: the data-protection figures as tables and small server-drawn charts."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from archive.overview import ERASURE_WINDOW, LISTED, PURGE_HORIZON, overview
from core.svg_charts import bar_chart
from sessions_app.public import utc_now_ms_precision

# It shows sessions and the trail: who may see both may see it.
NEEDS = ("sessions_app.view_sessionrecord", "audit.view_auditevent")


def overview_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perms(NEEDS):
        raise PermissionDenied
    figures = async_to_sync(overview)(now=utc_now_ms_precision())
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "figures": figures,
        "listed": LISTED,
        "purge_days": PURGE_HORIZON.days,
        "erasure_days": ERASURE_WINDOW.days,
        "status_chart": bar_chart("Sessions by status", figures.by_status),
        "views_chart": bar_chart("Transcript views per auditor", figures.views_by_auditor),
    }
    return TemplateResponse(request, "archive/admin_overview.html", context)
