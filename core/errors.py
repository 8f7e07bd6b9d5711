"""The error hierarchy every app extends: each error knows its code and HTTP status."""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """An expected failure a client may see.

    `code` and `status` are part of the public API; `detail` is a short,
    content-free sentence safe to show to the client.
    """

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    default_detail: ClassVar[str] = "The gateway could not complete the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(self.detail)


class InvalidRequest(GatewayError):
    code = "invalid_request"
    status = 400
    title = "Invalid request"
    default_detail = "The request is not valid."


class Unauthenticated(GatewayError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"
    default_detail = "A valid bearer token is required."

    def __init__(self, detail: str | None = None, *, error: str | None = "invalid_token") -> None:
        challenge = 'Bearer realm="llm-gateway"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(GatewayError):
    code = "forbidden"
    status = 403
    title = "Forbidden"
    default_detail = "The token does not grant this operation."

    def __init__(self, detail: str | None = None, *, scope: str | None = None) -> None:
        headers = {}
        if scope:
            headers["WWW-Authenticate"] = f'Bearer realm="llm-gateway", error="insufficient_scope", scope="{scope}"'
        super().__init__(detail, headers=headers)


class NotFound(GatewayError):
    code = "not_found"
    status = 404
    title = "Not found"
    default_detail = "No such resource."


class MethodNotAllowed(GatewayError):
    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"
    default_detail = "This method is not allowed here."

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(headers={"Allow": ", ".join(allowed)})


class NotAcceptable(GatewayError):
    code = "not_acceptable"
    status = 406
    title = "Not acceptable"
    default_detail = "The requested media type cannot be produced."


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"
    status = 413
    title = "Payload too large"
    default_detail = "The request body is too large."


class UnsupportedMediaType(GatewayError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"
    default_detail = "The request body must be application/json."


class RateLimited(GatewayError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"
    default_detail = "Too many requests; retry later."

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
        super().__init__(detail, headers=headers)


class ServiceUnavailable(GatewayError):
    code = "service_unavailable"
    status = 503
    title = "Service unavailable"
    default_detail = "The gateway cannot serve this request right now; retry later."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        # A hint for clients and proxies: worth a retry in a second (after their own backoff).
        super().__init__(detail, headers={"Retry-After": "1", **(headers or {})}, extra=extra)


class AuthUnavailable(ServiceUnavailable):
    code = "auth_unavailable"
    title = "Authentication unavailable"
    default_detail = "The identity provider's keys cannot be fetched; retry later."


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"
    title = "Session store unavailable"
    default_detail = "The session store cannot be reached; retry later."
