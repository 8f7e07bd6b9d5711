"""The turn endpoint, `POST /api/v1/sessions/{id}/messages`, as a Channels HTTP consumer.

It is the hot path, so it runs outside Django's request machinery (routed in
`config/asgi.py` ahead of Django) and shares with the DRF views only what
matters: the authentication function, the error mapping and the
`SessionManager`.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from core.auth import authenticate_authorization, require_scope
from core.auth.principal import WRITE_SCOPE
from core.errors import InvalidRequest, MethodNotAllowed, PayloadTooLarge, UnsupportedMediaType
from core.problems import PROBLEM_CONTENT_TYPE, problem_for_exception
from core.result import unwrap
from sessions_app.api import presenters
from sessions_app.api.turn_input import parse_turn
from sessions_app.domain import is_session_id
from sessions_app.errors import SessionNotFound
from sessions_app.wiring import get_session_manager

JSON = b"application/json"


class HttpEdgeConsumer(AsyncHttpConsumer):
    """An HTTP consumer with a bounded request body and problem+json errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._size = 0
        self._max_body = settings.MAX_REQUEST_BYTES

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale DB connections (a thread hop) before every
        # message; these consumers never touch the database, so skip it.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def http_request(self, message: dict[str, Any]) -> None:
        if self._size == 0 and self._declared_length() > self._max_body:
            await self.send_problem(PayloadTooLarge())
            raise StopConsumer()
        chunk = message.get("body", b"")
        self._size += len(chunk)
        if self._size > self._max_body:
            await self.send_problem(PayloadTooLarge())
            raise StopConsumer()
        await super().http_request(message)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    def _declared_length(self) -> int:
        raw = self.header(b"content-length")
        try:
            return int(raw) if raw else 0
        except ValueError:
            return 0

    async def send_json(
        self, status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        payload = orjson.dumps(body)
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(payload)), **(headers or {})}
        await self.send_response(status, payload, headers=_encode_headers(all_headers))

    async def send_problem(self, exc: BaseException) -> None:
        body, headers = problem_for_exception(exc, instance=self.scope.get("path"))
        await self.send_json(body["status"], body, headers, content_type=PROBLEM_CONTENT_TYPE)


class TurnConsumer(HttpEdgeConsumer):
    async def handle(self, body: bytes) -> None:
        try:
            await self._turn(body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a problem response
            await self.send_problem(exc)

    async def _turn(self, body: bytes) -> None:
        if self.scope["method"] != "POST":
            raise MethodNotAllowed(["POST"])
        principal = await authenticate_authorization(_decode(self.header(b"authorization")))
        require_scope(principal, WRITE_SCOPE)
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not is_session_id(session_id):
            raise SessionNotFound()
        content_type = (self.header(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != JSON:
            raise UnsupportedMediaType()
        turn = parse_turn(body)
        if turn.stream:
            raise InvalidRequest("stream: streaming replies are not available yet.")
        outcome = unwrap(
            await get_session_manager().turn_send(
                owner=principal.owner,
                session_id=session_id,
                content=turn.content,
                params=turn.params,
                request_id=uuid.uuid4().hex,
            )
        )
        await self.send_json(200, presenters.turn(outcome))


def _decode(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
