"""The one mapping from errors to RFC 9457 problem details, for HTTP bodies and stream frames."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from core.errors import GatewayError
from core.observability.tracing import current_trace_id

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:llm-gateway:problem:"

logger = logging.getLogger(__name__)


def problem_type(code: str) -> str:
    return TYPE_PREFIX + code


def problem_from_error(error: GatewayError, *, instance: str | None = None) -> dict[str, Any]:
    """The problem object for an expected error; never carries internal messages."""
    body: dict[str, Any] = {
        "type": problem_type(error.code),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if instance:
        body["instance"] = instance
    trace_id = current_trace_id()
    if trace_id:
        body["trace_id"] = trace_id  # a user's bug report leads straight to the trace
    body.update(error.extra)
    return body


def problem_for_exception(exc: BaseException, *, instance: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Problem body and headers for any exception; unexpected ones become an opaque 500."""
    if isinstance(exc, GatewayError):
        return problem_from_error(exc, instance=instance), exc.headers
    logger.error("unhandled_error", exc_info=exc)
    return problem_from_error(GatewayError(), instance=instance), {}


def problem_json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


# An API with its own error shape (OpenAI's under /v1/) registers it here, so the middleware's
# refusals (413, 431) on its paths speak it too: path prefix -> error -> (body, content type).
ErrorRenderer = Callable[[GatewayError], tuple[bytes, str]]
_RENDERERS: dict[str, ErrorRenderer] = {}


def render_errors_under(prefix: str, renderer: ErrorRenderer) -> None:
    _RENDERERS[prefix] = renderer


async def send_asgi_problem(send: Any, error: GatewayError, *, instance: str | None = None) -> None:
    """A whole problem response through a bare ASGI `send`, for middleware below the views
    (in the error shape registered for the path `instance`, if any)."""
    renderer = next((r for prefix, r in _RENDERERS.items() if instance and instance.startswith(prefix)), None)
    if renderer is not None:
        body, content_type = renderer(error)
    else:
        body, content_type = problem_json(problem_from_error(error, instance=instance)), PROBLEM_CONTENT_TYPE
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
