"""DRF views for session CRUD; each validates input, calls one service (lifecycle or selectors), shapes output.

They are the documented contract. `POST`/`GET /api/v1/sessions` and `GET /api/v1/sessions/{id}`
are served by the consumers in `crud.py` (routed ahead of Django), which keep these views'
behaviour; the views answer every other method of those routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth.drf import ChatScopes, owner_of
from core.openapi import documented
from core.result import Result, unwrap
from sessions_app.api import presenters
from sessions_app.api.schema import (
    CREATE_ERRORS,
    DESTROY_ERRORS,
    END_ERRORS,
    IDEMPOTENCY_KEY,
    LIST_ERRORS,
    READ_ERRORS,
    RESUME_ERRORS,
    SESSION_ID,
)
from sessions_app.api.serializers import (
    SessionCreateSerializer,
    SessionDetailQuerySerializer,
    SessionDetailSerializer,
    SessionListQuerySerializer,
    SessionPageSerializer,
    SessionSerializer,
)
from sessions_app.domain import SessionStatus, is_session_id
from sessions_app.errors import SessionNotFound
from sessions_app.idempotency import IdempotentRequest
from sessions_app.stores.encoding import decode_message_cursor
from sessions_app.wiring import get_session_manager

T = TypeVar("T")

LOCATION = OpenApiParameter(
    "Location", str, OpenApiParameter.HEADER, required=True, description="The new session's URL.", response=[201]
)


def call(method: Callable[..., Awaitable[Result[T, Any]]], /, **kwargs: Any) -> T:
    """Run an async service method from a sync view (on the server's event loop under ASGI)."""
    return unwrap(async_to_sync(method)(**kwargs))


def checked_id(session_id: str) -> str:
    if not is_session_id(session_id):
        raise SessionNotFound()
    return session_id


class SessionCollectionView(APIView):
    permission_classes = [ChatScopes]

    @documented(
        *LIST_ERRORS,
        operation_id="sessions_list",
        parameters=[SessionListQuerySerializer],
        responses={200: SessionPageSerializer},
        summary="List your sessions, newest first",
    )
    def get(self, request: Request) -> Response:
        query = SessionListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        status = query.validated_data.pop("status", None)
        page = call(
            get_session_manager().selectors.session_list,
            owner=owner_of(request),
            status=SessionStatus(status) if status else None,
            **query.validated_data,
        )
        return Response(presenters.page(page))

    @documented(
        *CREATE_ERRORS,
        operation_id="sessions_create",
        request=SessionCreateSerializer,
        parameters=[IDEMPOTENCY_KEY, LOCATION],
        responses={201: OpenApiResponse(SessionSerializer, description="The new session.")},
        summary="Start a session",
        description="With an `Idempotency-Key`, a repeat answers with the session the first request created, "
        "or 404 `session_not_found` if that session has left the active store since.",
    )
    def post(self, request: Request) -> Response:
        data = SessionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        idempotent = IdempotentRequest.of(request.headers.get("Idempotency-Key"), "create", data.validated_data)
        session = call(
            get_session_manager().lifecycle.session_create,
            owner=owner_of(request),
            idempotent=idempotent,
            **data.validated_data,
        )
        location = request.build_absolute_uri(reverse("session-detail", kwargs={"session_id": session.id}))
        return Response(presenters.session(session), status=201, headers={"Location": location})


class SessionDetailView(APIView):
    permission_classes = [ChatScopes]

    @documented(
        *READ_ERRORS,
        operation_id="sessions_retrieve",
        parameters=[SESSION_ID, SessionDetailQuerySerializer],
        responses={200: SessionDetailSerializer},
        summary="A session with its messages, a page at a time",
        description="The messages come oldest first, `messages_limit` of them; `messages_next` continues.",
    )
    def get(self, request: Request, session_id: str) -> Response:
        query = SessionDetailQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        cursor = query.validated_data.get("messages_cursor")
        limit = query.validated_data["messages_limit"]
        transcript = call(
            get_session_manager().selectors.session_get,
            owner=owner_of(request),
            session_id=checked_id(session_id),
            from_seq=decode_message_cursor(cursor) if cursor else 0,
            limit=limit + 1,  # one more than the page tells whether there is a next
        )
        return Response(presenters.transcript_page(transcript, limit))

    @documented(
        *DESTROY_ERRORS,
        operation_id="sessions_destroy",
        parameters=[SESSION_ID],
        responses={204: None},
        summary="Erase a session and all its messages, from the active store and the archive",
    )
    def delete(self, request: Request, session_id: str) -> Response:
        call(get_session_manager().lifecycle.session_delete, owner=owner_of(request), session_id=checked_id(session_id))
        return Response(status=204)


class SessionEndView(APIView):
    permission_classes = [ChatScopes]

    @documented(
        *END_ERRORS,
        operation_id="sessions_end",
        parameters=[SESSION_ID],
        request=None,
        responses={200: SessionSerializer},
        summary="End a session and archive it",
        description="The session takes no more messages and moves to the archive at once (`status` "
        "`archived`); if the archive cannot be reached it stays `ended` and is archived later.",
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = call(
            get_session_manager().lifecycle.session_end, owner=owner_of(request), session_id=checked_id(session_id)
        )
        return Response(presenters.session(session))


class SessionResumeView(APIView):
    permission_classes = [ChatScopes]

    @documented(
        *RESUME_ERRORS,
        operation_id="sessions_resume",
        parameters=[SESSION_ID],
        request=None,
        responses={200: SessionSerializer},
        summary="Bring a session back from the archive, active, with its whole history",
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = call(
            get_session_manager().lifecycle.session_resume, owner=owner_of(request), session_id=checked_id(session_id)
        )
        return Response(presenters.session(session))
