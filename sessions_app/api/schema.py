"""OpenAPI documentation for the turn endpoint, which a Channels consumer serves.

drf-spectacular documents DRF views only, so this view carries the schema of
`POST /api/v1/sessions/{id}/messages`. It is mounted only in the schema's own
URLconf (`config/schema_urls.py`); traffic to that path goes to `TurnConsumer`.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app.api.serializers import TurnRequestSerializer, TurnResponseSerializer
from sessions_app.api.views import PROBLEM, SESSION_ERRORS


class TurnEndpointSchema(APIView):
    @extend_schema(
        operation_id="sessions_messages_create",
        request=TurnRequestSerializer,
        responses={
            200: TurnResponseSerializer,
            **SESSION_ERRORS,
            409: PROBLEM,
            413: PROBLEM,
            415: PROBLEM,
            422: PROBLEM,
            502: PROBLEM,
            504: PROBLEM,
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
