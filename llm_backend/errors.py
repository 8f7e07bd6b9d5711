"""Typed failures of a model backend, each with its client-facing code and status."""

from __future__ import annotations

from core.errors import GatewayError


class BackendError(GatewayError):
    code = "backend_error"
    status = 502
    title = "Model server error"
    default_detail = "The model server failed to answer."


class BackendUnavailable(BackendError):
    code = "backend_unavailable"
    status = 503
    title = "Model server unavailable"
    default_detail = "The model server cannot be reached; retry later."

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class BackendTimeout(BackendError):
    code = "backend_timeout"
    status = 504
    title = "Model server timeout"
    default_detail = "The model server did not answer in time."


class BackendRejected(BackendError):
    """The model server refused this request (bad parameters, context too long, unknown model)."""

    code = "backend_rejected"
    status = 422
    title = "Model server rejected the request"
    default_detail = "The model server rejected the request, for example because the context is too long."
