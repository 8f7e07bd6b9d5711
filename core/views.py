"""Small views of the kernel: liveness, the development JWKS, and problem+json error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import defaults

from core.auth import devkeys
from core.errors import Forbidden, GatewayError, InvalidRequest, NotFound
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


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        return defaults.permission_denied(request, exception or Exception())
    return _problem(request, Forbidden())
