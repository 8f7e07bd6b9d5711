"""OpenAI's error envelope, `{"error": {"message", "type", "param", "code"}}`, for every `GatewayError`.

The status is the gateway's own (the SDK maps 400, 401, 403, 404, 409, 413, 422, 429,
500 and 503 to its exception classes and retries 409, 429 and 5xx itself); the `type`
is OpenAI's word for that status; the `code` is the gateway's error code, so a client
sees the same codes as on the native API. `param` names the offending parameter.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from core.errors import GatewayError, InvalidRequest, NotFound
from sessions_app.public import MessageNotFound, SessionNotFound

logger = logging.getLogger(__name__)

# OpenAI's error types by status; any other 4xx is an invalid request, any other 5xx a server error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


class InvalidParam(InvalidRequest):
    """A parameter the gateway refuses: its name travels in the envelope's `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}.", extra={"param": param})


class UnsupportedParam(InvalidParam):
    """A parameter the model servers cannot honour: refused, never ignored silently."""

    code = "unsupported_parameter"
    title = "Unsupported parameter"

    def __init__(self, param: str, message: str = "is not supported by this gateway") -> None:
        super().__init__(param, message)


class ConversationNotFound(SessionNotFound):
    """Also what another owner's conversation, or a forged id, looks like (a conversation is a
    session: the native API's code)."""

    default_detail = "No such conversation."


class ItemNotFound(MessageNotFound):
    default_detail = "No such item in this conversation."


class RouteNotFound(NotFound):
    code = "not_found"
    default_detail = "No such route under /v1/."


class ModelNotFound(NotFound):
    code = "model_not_found"
    title = "Model not found"
    default_detail = "The gateway does not offer this model."


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")


def param_of(error: GatewayError) -> str | None:
    """The parameter an error names: ours say it in `param`; the native parsers' in `errors`."""
    param = error.extra.get("param")
    if isinstance(param, str):
        return param
    errors = error.extra.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        field = errors[0].get("field")
        return field if isinstance(field, str) else None
    return None


def envelope(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.detail,
            "type": error_type(error.status),
            "param": param_of(error),
            "code": error.code,
        }
    }


def render_error(error: GatewayError) -> tuple[bytes, str]:
    """The envelope as bytes, for the middleware's refusals on `/v1/` paths (core.problems)."""
    return orjson.dumps(envelope(error)), "application/json"


def error_for_exception(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, envelope and headers for any exception; an unexpected one is an opaque 500."""
    if not isinstance(exc, GatewayError):
        logger.error("unhandled_error", exc_info=exc)
        exc = GatewayError()
    return exc.status, envelope(exc), exc.headers
