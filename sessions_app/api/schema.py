"""OpenAPI documentation of the session API: what each operation can answer, and the turn endpoint.

drf-spectacular documents DRF views only, so `TurnEndpointSchema` carries the schema of
`POST /api/v1/sessions/{id}/messages`. It is mounted only in the schema's own URLconf
(`config/schema_urls.py`); traffic to that path goes to `TurnConsumer`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from core.jsonbody import CONTROL_CHARACTERS
from core.openapi import EDGE_ERRORS, VIEW_ERRORS, ErrorType, ForeignProblem, documented
from core.shutdown import ShuttingDown
from limits.errors import OwnerStreamLimit
from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from sessions_app.admission import TooManyStreams
from sessions_app.api.serializers import MAX_METADATA_DEPTH, TurnRequestSerializer, TurnResponseSerializer
from sessions_app.errors import (
    InvalidCursor,
    MessageLimitReached,
    SessionLimitReached,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
    UnknownModel,
)
from sessions_app.idempotency import IdempotencyInProgress, IdempotencyKeyReused
from sessions_app.wiring import known_models

# The archive app raises it behind the SessionArchive port.
ARCHIVE_UNAVAILABLE = ForeignProblem("archive_unavailable", 503, "The session archive cannot be reached; retry later.")

SESSION_ID = OpenApiParameter(
    "session_id",
    {"type": "string", "format": "uuid", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
    OpenApiParameter.PATH,
    description="A lowercase UUID; any other value names no session (404).",
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "1 to 255 printable ASCII characters, no spaces. A request repeated with the same key gets the "
        "first one's answer, once, on any instance: 409 `idempotency_in_progress` while the first is still "
        "being answered, 422 `idempotency_key_reused` if the key came with a different request."
    ),
)
IDEMPOTENCY_ERRORS: tuple[ErrorType, ...] = (IdempotencyInProgress, IdempotencyKeyReused)
JSON_BODY_ERRORS: tuple[ErrorType, ...] = (InvalidRequest, PayloadTooLarge, UnsupportedMediaType)

LIST_ERRORS = (*VIEW_ERRORS, InvalidRequest, InvalidCursor, ARCHIVE_UNAVAILABLE)
# session_not_found: an Idempotency-Key replay whose session is gone from the active store.
CREATE_ERRORS = (
    *VIEW_ERRORS,
    *JSON_BODY_ERRORS,
    *IDEMPOTENCY_ERRORS,
    UnknownModel,
    SessionLimitReached,
    SessionNotFound,
)
RETRIEVE_ERRORS = (*VIEW_ERRORS, SessionNotFound, ARCHIVE_UNAVAILABLE)
READ_ERRORS = (*RETRIEVE_ERRORS, InvalidRequest, InvalidCursor)
DESTROY_ERRORS = RETRIEVE_ERRORS
END_ERRORS = (*RETRIEVE_ERRORS, TurnInProgress)
RESUME_ERRORS = (*END_ERRORS, SessionLimitReached)
TURN_ERRORS = (
    *EDGE_ERRORS,
    *JSON_BODY_ERRORS,
    *IDEMPOTENCY_ERRORS,
    SessionNotFound,
    SessionNotActive,
    TurnInProgress,
    MessageLimitReached,
    OwnerStreamLimit,
    BackendRejected,
    BackendError,
    BackendUnavailable,
    TooManyStreams,
    BackendTimeout,
    ShuttingDown,
)


def _event(name: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    data_schema = {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    return {
        "type": "object",
        "description": description,
        "required": ["event", "data"],
        "properties": {"event": {"const": name}, "data": data_schema},
    }


# One Server-Sent Event of a streamed turn (OpenAPI before 3.2 describes a stream by its events).
TURN_EVENT = {
    "oneOf": [
        _event(
            "delta",
            {"type": "object", "required": ["content"], "properties": {"content": {"type": "string"}}},
            "The next piece of the reply.",
        ),
        _event("done", {"$ref": "#/components/schemas/TurnResponse"}, "The turn, stored; the last event."),
        _event("error", {"$ref": "#/components/schemas/Problem"}, "The turn failed after it began; the last event."),
    ]
}


_TEXT = f"^[^{CONTROL_CHARACTERS}]*$"
_NOT_BLANK_TEXT = rf"^[^{CONTROL_CHARACTERS}]*[^\s{CONTROL_CHARACTERS}][^{CONTROL_CHARACTERS}]*$"
_SCALAR = {"not": {"anyOf": [{"type": "object"}, {"type": "array"}]}}


def document_input_rules(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A drf-spectacular postprocessing hook: the request rules serializer fields cannot state, with
    this deployment's limits, so a request the schema allows is one the gateway accepts."""
    components = result["components"]["schemas"]
    limits = settings.SESSION_LIMITS
    create = components["SessionCreateRequest"]["properties"]
    create["model"]["enum"] = sorted(known_models())
    create["system_prompt"].update(pattern=_TEXT, maxLength=limits["MAX_SYSTEM_PROMPT_CHARS"])
    create["metadata"].update(_nested_object(MAX_METADATA_DEPTH))
    create["metadata"]["description"] += (
        f" At most {MAX_METADATA_DEPTH} levels deep and {limits['MAX_METADATA_BYTES']} bytes as JSON "
        "(413 `payload_too_large` beyond)."
    )
    if "TurnRequestRequest" in components:  # absent from a schema of Django's URLs alone
        _document_turn_rules(components["TurnRequestRequest"]["properties"], limits)
    for path in ("/api/v1/sessions", "/api/v1/sessions/{session_id}"):
        for parameter in result["paths"][path]["get"]["parameters"]:
            if parameter["in"] == "query":
                # DRF reads a query parameter with an empty value as one left out.
                parameter["allowEmptyValue"] = True
    return result


def _document_turn_rules(turn: dict[str, Any], limits: dict[str, Any]) -> None:
    turn["content"].update(pattern=_NOT_BLANK_TEXT, maxLength=limits["MAX_CONTENT_CHARS"])
    turn["content"]["description"] = (
        "Not blank; no control characters but tab, line feed and carriage return. Longer than the "
        "limit: 413 `payload_too_large`."
    )
    turn["max_tokens"]["maximum"] = limits["MAX_OUTPUT_TOKENS"]
    stops = turn["stop"]
    turn["stop"] = {"oneOf": [stops["items"], stops], "description": "One stop sequence, or a list of them."}


def _nested_object(depth: int) -> dict[str, Any]:
    """A JSON object nesting objects and arrays at most `depth` levels deep, itself included."""
    value: dict[str, Any] = _SCALAR
    for _ in range(depth - 1):
        value = {
            "anyOf": [_SCALAR, {"type": "object", "additionalProperties": value}, {"type": "array", "items": value}]
        }
    return {"type": "object", "additionalProperties": value}


class TurnEndpointSchema(APIView):
    @documented(
        *TURN_ERRORS,
        operation_id="sessions_messages_create",
        request=TurnRequestSerializer,
        parameters=[SESSION_ID, IDEMPOTENCY_KEY],
        responses={
            (200, "application/json"): OpenApiResponse(
                TurnResponseSerializer, description="The message and the reply, stored; or, streamed, their events."
            ),
            (200, "text/event-stream"): OpenApiResponse(TURN_EVENT),
        },
        summary="Send a message and get the model's reply",
        description=(
            "Stores the message and the reply together, or neither. 409 `turn_in_progress` while "
            "another message in the session is being answered, 409 `session_not_active` once the "
            "session has ended, 503 `backend_unavailable` / 504 `backend_timeout` when the model "
            "server fails (nothing is stored; retry).\n\n"
            "With `stream: true` (or `Accept: text/event-stream`) the 200 answer is "
            '`text/event-stream`: `event: delta` with `data: {"content"}` per piece, then '
            "`event: done` with the body documented here plus `finish_reason`, or `event: error` "
            "with a problem object. A client that disconnects cancels the model; the partial reply "
            "is kept with `status` `cancelled`. 503 `too_many_streams` when the process streams "
            "its maximum already."
        ),
    )
    def post(self, request: Request, session_id: str) -> Response:
        raise AssertionError("served by sessions_app.api.consumers.TurnConsumer")
