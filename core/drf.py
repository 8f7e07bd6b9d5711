"""DRF glue: the exception handler that renders every API error as problem+json."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

from core import errors
from core.problems import PROBLEM_CONTENT_TYPE, problem_for_exception


def _validation_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested error detail into [{"field", "message"}]."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            field = key if key != "non_field_errors" else ""
            out += _validation_errors(value, f"{prefix}.{field}".strip(".") if field else prefix)
        return out
    if isinstance(detail, list):
        out = []
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                out += _validation_errors(value, f"{prefix}[{index}]")
            else:
                out += _validation_errors(value, prefix)
        return out
    return [{"field": prefix, "message": str(detail)}]


def to_gateway_error(exc: BaseException) -> BaseException:
    """Translate framework exceptions into the gateway's own errors."""
    match exc:
        case errors.GatewayError():
            return exc
        case drf.ValidationError():
            problems = _validation_errors(exc.detail)
            first = problems[0] if problems else {"field": "", "message": "Invalid input."}
            summary = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
            return errors.InvalidRequest(summary, extra={"errors": problems})
        case drf.ParseError():
            return errors.InvalidRequest("The request body is not valid JSON.")
        case drf.NotAuthenticated():
            return errors.Unauthenticated("A bearer token is required.", error=None)
        case drf.AuthenticationFailed():
            return errors.Unauthenticated(str(exc.detail))
        case drf.PermissionDenied() | PermissionDenied():
            return errors.Forbidden()
        case drf.NotFound() | Http404():
            return errors.NotFound()
        case drf.NotAcceptable():
            return errors.NotAcceptable()
        case drf.UnsupportedMediaType():
            return errors.UnsupportedMediaType()
        case RequestDataTooBig():
            return errors.PayloadTooLarge()
        case drf.Throttled():
            return errors.RateLimited(retry_after=getattr(exc, "wait", None))
    return exc


def exception_handler(exc: BaseException, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    translated = to_gateway_error(exc)
    if isinstance(exc, drf.MethodNotAllowed):
        view = context.get("view")
        allowed = list(getattr(view, "allowed_methods", [])) if view else []
        translated = errors.MethodNotAllowed(allowed)
    body, headers = problem_for_exception(translated, instance=request.path if request else None)
    return Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)
