"""OpenAPI description of problem responses: one `Problem` component, and the error responses of an
operation built from the errors it can raise, so the statuses and codes documented are the code's own."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from core.errors import (
    AuthUnavailable,
    Forbidden,
    GatewayError,
    NotAcceptable,
    RateLimited,
    StoreUnavailable,
    Unauthenticated,
)
from core.guards import HeadersTooLarge
from core.problems import PROBLEM_CONTENT_TYPE, TYPE_PREFIX


@dataclass(frozen=True)
class ForeignProblem:
    """A problem another app raises, named without importing that app (dependencies point one way)."""

    code: str
    status: int
    default_detail: str


ErrorType = type[GatewayError] | ForeignProblem

# What every authenticated operation can answer before it does anything of its own.
EDGE_ERRORS: tuple[ErrorType, ...] = (
    Unauthenticated,
    Forbidden,
    RateLimited,
    HeadersTooLarge,
    AuthUnavailable,
    StoreUnavailable,  # the per-owner limits are counted in Redis
)
# The DRF views also negotiate the response's media type; the turn consumer answers JSON to any Accept.
VIEW_ERRORS: tuple[ErrorType, ...] = (*EDGE_ERRORS, NotAcceptable)


class FieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="The field at fault, dotted for nested ones; empty for the whole body.")
    message = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """An RFC 9457 problem; `code` is the stable, machine-readable part."""

    type = serializers.CharField(help_text=f"`{TYPE_PREFIX}<code>`.")
    title = serializers.CharField()
    status = serializers.IntegerField(help_text="The HTTP status, repeated.")
    detail = serializers.CharField(help_text="A short sentence for people; never message content.")
    code = serializers.CharField(help_text="Each response lists the codes it can carry.")
    instance = serializers.CharField(required=False, help_text="The request's path.")
    trace_id = serializers.CharField(required=False, help_text="The request's trace, when tracing is on.")
    # The metaclass takes declared fields off the class, so this does not hide `Serializer.errors`.
    errors = FieldErrorSerializer(  # type: ignore[assignment]
        many=True, required=False, help_text="Validation failures, one per field."
    )


_CHALLENGE: dict[str, object] = {"type": "string", "pattern": "^Bearer "}
_SECONDS: dict[str, object] = {"type": "integer", "minimum": 1}
# Response headers by status: (name, schema, description, always sent).
_HEADERS: dict[int, list[tuple[str, dict[str, object], str, bool]]] = {
    401: [("WWW-Authenticate", _CHALLENGE, 'The bearer challenge, `Bearer realm="llm-gateway"` and the error.', True)],
    403: [("WWW-Authenticate", _CHALLENGE, "The bearer challenge naming the missing scope.", False)],
    429: [("Retry-After", _SECONDS, "Seconds to wait before trying again.", True)],
    503: [("Retry-After", _SECONDS, "Seconds to wait before trying again.", True)],
}


def problem_responses(*errors: ErrorType) -> dict[tuple[int, str], OpenApiResponse]:
    """`extend_schema(responses=...)` entries: per status, the Problem body and the codes it may carry."""
    by_status: dict[int, dict[str, ErrorType]] = defaultdict(dict)
    for error in errors:
        by_status[error.status].setdefault(error.code, error)
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemSerializer, description=_describe(codes.values()))
        for status, codes in sorted(by_status.items())
    }


def problem_headers(*errors: ErrorType) -> list[OpenApiParameter]:
    """`extend_schema(parameters=...)` entries: the headers the problem responses of these errors carry."""
    statuses = sorted({error.status for error in errors} & _HEADERS.keys())
    return [
        OpenApiParameter(
            name,
            schema,
            OpenApiParameter.HEADER,
            required=required,
            description=description,
            response=[status],
        )
        for status in statuses
        for name, schema, description, required in _HEADERS[status]
    ]


def documented(*errors: ErrorType, parameters: list[Any] | None = None, **kwargs: Any) -> Any:
    """`extend_schema` with the problem responses of these errors and the headers they carry."""
    responses = {**kwargs.pop("responses"), **problem_responses(*errors)}
    return extend_schema(responses=responses, parameters=[*(parameters or []), *problem_headers(*errors)], **kwargs)


def _describe(errors: Iterable[ErrorType]) -> str:
    return "\n".join(f"- `{error.code}`: {error.default_detail}" for error in errors)
