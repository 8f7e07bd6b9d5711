"""Session creation, listing and reads (`POST`/`GET /api/v1/sessions`, `GET /api/v1/sessions/{id}`) as consumers.

The DRF views in `views.py` stay the contract (drf-spectacular documents them, and
they answer every other method: HEAD, OPTIONS, DELETE); these consumers answer the
busy methods on the event loop, as the turn endpoint does, without Django's request
machinery and the thread each sync view runs in (about 100 creations/s at 16 clients
on PostgreSQL through it). They keep the views' behaviour: the same authentication,
scopes and per-owner limit in the same order, the same serializers validating the
same input, the same services, body shapes, errors and headers (Django's security
headers and DRF's `Allow`). A request Django must answer itself (a refused host, a
redirect to HTTPS) is handed to Django.
"""

from __future__ import annotations

import functools
import io
from typing import Any, ClassVar

import orjson
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.urls import get_script_prefix, get_urlconf, reverse
from rest_framework import exceptions as drf
from rest_framework.serializers import Serializer
from rest_framework.utils.mediatypes import media_type_matches

from core.auth import authenticate_authorization, require_scope
from core.auth.principal import READ_SCOPE, WRITE_SCOPE
from core.drf import to_gateway_error
from core.jsonbody import BoundedJSONParser
from core.problems import PROBLEM_CONTENT_TYPE, problem_for_exception
from core.result import unwrap
from core.security_headers import needs_django, security_headers
from sessions_app.api import presenters
from sessions_app.api.consumers import HttpEdgeConsumer
from sessions_app.api.serializers import (
    SessionCreateSerializer,
    SessionDetailQuerySerializer,
    SessionListQuerySerializer,
)
from sessions_app.api.views import checked_id
from sessions_app.domain import SessionStatus
from sessions_app.idempotency import IdempotentRequest
from sessions_app.pipeline import admit
from sessions_app.stores.encoding import decode_message_cursor
from sessions_app.wiring import get_session_manager

_django: ASGIHandler | None = None


def django_application() -> ASGIHandler:
    """Django's ASGI handler, for the methods and requests these consumers leave to the DRF views."""
    global _django
    if _django is None:
        _django = ASGIHandler()
    return _django


class SessionCrudConsumer(HttpEdgeConsumer):
    """The shared steps: hand over to Django what it must answer, read the body, authenticate,
    check the scope, count the request against the owner's limit, then `serve`; any failure is
    the problem+json the DRF exception handler would have rendered."""

    methods: ClassVar[frozenset[str]]  # served here; the rest go to the DRF view
    body = b""
    allow: ClassVar[bytes]  # the DRF view's `Allow` header

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = ASGIRequest(scope, io.BytesIO())
        if scope["method"] not in self.methods or needs_django(request):
            await django_application()(scope, receive, send)
            return
        self.request = request
        self.extra_headers = [(b"allow", self.allow), *security_headers(request)]
        await super().__call__(scope, receive, send)

    async def handle(self) -> None:
        # The whole body first, as Django reads it before any view runs: a client's slow or
        # oversized body meets the same timeout (408) and bound (413) as on every Django route.
        body = await self.read_body()
        if body is None:
            return  # the client left, or its body was too large (answered)
        self.body = body
        try:
            principal = await authenticate_authorization(_decode(self.header(b"authorization")))
            require_scope(principal, READ_SCOPE if self.scope["method"] == "GET" else WRITE_SCOPE)
            await admit(principal.owner)
            status, payload, headers = await self.serve(principal.owner)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a problem, as in the DRF views
            await self.send_problem(to_gateway_error(exc))
            return
        await self.send_json(status, payload, headers)

    async def serve(self, owner: str) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    async def send_json(
        self, status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        payload = orjson.dumps(body)
        all_headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(payload)).encode()),
            *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()),
            *self.extra_headers,
        ]
        await self.send_response(status, payload, headers=all_headers)

    async def send_problem(self, exc: BaseException) -> None:
        body, headers = problem_for_exception(exc, instance=self.request.path)
        await self.send_json(body["status"], body, headers, content_type=PROBLEM_CONTENT_TYPE)

    def query(self, serializer: type[Serializer]) -> dict[str, Any]:  # type: ignore[type-arg]
        """The query string, validated by the view's serializer."""
        return validated(serializer, self.request.GET)

    def json_body(self) -> Any:
        """The body as DRF's `request.data` reads it: no body is `{}`; else it must be JSON."""
        body = self.body
        if not body:
            return {}
        content_type = self.request.META.get("CONTENT_TYPE", "")
        if not media_type_matches(BoundedJSONParser.media_type, content_type):
            raise drf.UnsupportedMediaType(content_type)
        return BoundedJSONParser().parse(io.BytesIO(body))


class SessionCollectionConsumer(SessionCrudConsumer):
    """`GET` (list) and `POST` (create) on `/api/v1/sessions`, as `views.SessionCollectionView`."""

    methods = frozenset({"GET", "POST"})
    allow = b"GET, POST, HEAD, OPTIONS"

    async def serve(self, owner: str) -> tuple[int, Any, dict[str, str]]:
        manager = get_session_manager()
        if self.scope["method"] == "GET":
            query = self.query(SessionListQuerySerializer)
            status = query.pop("status", None)
            page = unwrap(
                await manager.selectors.session_list(
                    owner=owner, status=SessionStatus(status) if status else None, **query
                )
            )
            return 200, presenters.page(page), {}
        data = validated(SessionCreateSerializer, self.json_body())
        idempotent = IdempotentRequest.of(_decode(self.header(b"idempotency-key")), "create", data)
        session = unwrap(await manager.lifecycle.session_create(owner=owner, idempotent=idempotent, **data))
        location = self.request.build_absolute_uri(_detail_path(session.id))
        return 201, presenters.session(session), {"Location": location}


class SessionDetailConsumer(SessionCrudConsumer):
    """`GET /api/v1/sessions/{id}`, as `views.SessionDetailView.get`."""

    methods = frozenset({"GET"})
    allow = b"GET, DELETE, HEAD, OPTIONS"

    async def serve(self, owner: str) -> tuple[int, Any, dict[str, str]]:
        query = self.query(SessionDetailQuerySerializer)
        cursor = query.get("messages_cursor")
        limit = query["messages_limit"]
        transcript = unwrap(
            await get_session_manager().selectors.session_get(
                owner=owner,
                session_id=checked_id(self.scope["url_route"]["kwargs"]["session_id"]),
                from_seq=decode_message_cursor(cursor) if cursor else 0,
                limit=limit + 1,  # one more than the page tells whether there is a next
            )
        )
        return 200, presenters.transcript_page(transcript, limit), {}


def validated(serializer: type[Serializer], data: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    """`data` validated by `serializer`, raising the `ValidationError` that
    `serializer(data=data).is_valid(raise_exception=True)` would.

    By one instance of each serializer, made once: a new one deep-copies all its fields (about
    50 µs, where validating takes under 10). Validation keeps nothing on the instance between
    calls and runs without awaiting, so requests on the loop cannot interleave in it."""
    return dict(_validator(serializer).run_validation(data))


@functools.cache
def _validator(serializer: type[Serializer]) -> Serializer:  # type: ignore[type-arg]
    return serializer()


def _detail_path(session_id: str) -> str:
    """`reverse("session-detail", kwargs={"session_id": session_id})` for a session's own id (a
    UUID, which reverse leaves as it is): the path reversed once per URL configuration and
    script prefix, with the id put in its place (reverse took about 30 µs a creation)."""
    before, after = _detail_path_around(get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
    return f"{before}{session_id}{after}"


_SOME_ID = "00000000-0000-4000-8000-000000000000"


@functools.lru_cache(maxsize=8)
def _detail_path_around(script_prefix: str, urlconf: str) -> tuple[str, str]:
    before, _, after = reverse("session-detail", kwargs={"session_id": _SOME_ID}, urlconf=urlconf).partition(_SOME_ID)
    return before, after


def _decode(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
