"""Small views of the kernel: liveness, the development JWKS, and problem+json error pages."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.auth import devkeys
from core.errors import Forbidden, GatewayError, InvalidRequest, NotFound, Unauthenticated
from core.health import run_checks
from core.observability import multiprocess
from core.observability.gauges import refresh_gauges
from core.problems import PROBLEM_CONTENT_TYPE, problem_from_error


def _json(body: Any, status: int = 200, content_type: str = "application/json") -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type=content_type)


def _problem(request: HttpRequest, error: GatewayError) -> HttpResponse:
    response = _json(problem_from_error(error, instance=request.path), error.status, PROBLEM_CONTENT_TYPE)
    for name, value in error.headers.items():
        response[name] = value
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up; no dependency is checked."""
    return _json({"status": "ok"})


async def readyz(request: HttpRequest) -> HttpResponse:
    """Each dependency with its status and time; 503 when one fails."""
    ready, checks = await run_checks()
    return _json({"status": "ok" if ready else "fail", "checks": checks}, status=200 if ready else 503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text, behind METRICS_TOKEN when set; absent when served on METRICS_BIND instead."""
    if settings.METRICS_BIND or not (settings.METRICS_TOKEN or settings.DEV_MODE):
        return _problem(request, NotFound())
    if settings.METRICS_TOKEN:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), settings.METRICS_TOKEN.encode()):
            return _problem(request, Unauthenticated("The metrics token is required."))
    await refresh_gauges()
    return HttpResponse(generate_latest(multiprocess.scrape_registry()), content_type=CONTENT_TYPE_LATEST)


def dev_jwks(request: HttpRequest) -> HttpResponse:
    """The development issuer's public keys; absent unless development mode is on."""
    if not settings.DEV_MODE:
        return _problem(request, NotFound())
    return _json(devkeys.jwks(devkeys.load_or_create_key(Path(settings.DEV_SIGNING_KEY_PATH))))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        return defaults.page_not_found(request, exception or Exception())
    return _problem(request, NotFound())


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/admin/"):
        return defaults.server_error(request)
    return _problem(request, GatewayError())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _problem(request, InvalidRequest())


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: problem+json like every other refusal, not Django's HTML page."""
    return _problem(request, Forbidden("CSRF verification failed: reload the form and submit it again."))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        return defaults.permission_denied(request, exception or Exception())
    return _problem(request, Forbidden())
