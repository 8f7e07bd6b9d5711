"""The turn endpoint, `POST /api/v1/sessions/{id}/messages`, as a Channels HTTP consumer.

It is the hot path, so it runs outside Django's request machinery (routed in
`config/asgi.py` ahead of Django) and shares with the DRF views only what
matters: the authentication function and the error mapping. The turn itself goes
through the turn pipeline (`sessions_app.pipeline`); this consumer parses it and
renders it as JSON, or as Server-Sent Events when the body says `"stream": true` or
the client accepts only `text/event-stream`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from core.auth import authenticate_authorization, require_scope
from core.auth.principal import WRITE_SCOPE, Principal
from core.departure import ClientGone
from core.errors import MethodNotAllowed, UnsupportedMediaType
from core.http_edge import EdgeHttpConsumer, encode_headers, request_id
from core.observability.context import annotate
from core.problems import PROBLEM_CONTENT_TYPE, problem_for_exception
from llm_backend.ports import Delta
from sessions_app.api import presenters
from sessions_app.api.turn_input import TurnInput, parse_turn
from sessions_app.domain import is_session_id
from sessions_app.errors import SessionNotFound
from sessions_app.idempotency import IdempotentRequest
from sessions_app.pipeline import (
    Turn,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnRequest,
    admit,
    refuse_if_draining,
)

logger = logging.getLogger(__name__)
JSON = b"application/json"


class HttpEdgeConsumer(EdgeHttpConsumer):
    """The edge consumer (`core.http_edge`) with problem+json errors."""

    async def send_json(
        self, status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        payload = orjson.dumps(body)
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(payload)), **(headers or {})}
        await self.send_response(status, payload, headers=encode_headers(all_headers))

    async def send_problem(self, exc: BaseException) -> None:
        body, headers = problem_for_exception(exc, instance=self.scope.get("path"))
        await self.send_json(body["status"], body, headers, content_type=PROBLEM_CONTENT_TYPE)


class TurnConsumer(HttpEdgeConsumer):
    """Parses the turn and renders it, as JSON or as Server-Sent Events; the turn pipeline
    (`sessions_app.pipeline`) admits, runs, commits and observes it."""

    async def handle(self) -> None:
        turn = Turn(mode="json")
        try:
            refuse_if_draining()
            principal, session_id = await self._admit()
            body = await self.read_body()
            if body is None:
                return  # the client left, or its body was too large (answered)
            parsed = parse_turn(body)
            request = self._request(principal, session_id, parsed)
            if self._wants_stream(parsed):
                turn.mode = "sse"
                await self._stream(turn, request)
            else:
                await self._reply(turn, request)
        except ClientGone:
            turn.observe()  # cancelled before its stream began: nobody to answer
        except Exception as exc:  # noqa: BLE001 - every failure before a response becomes a problem
            turn.fail(exc)
            turn.observe()
            await self.send_problem(exc)

    async def _admit(self) -> tuple[Principal, str]:
        """Everything the headers decide, before a byte of the body is read."""
        if self.scope["method"] != "POST":
            raise MethodNotAllowed(["POST"])
        principal = await authenticate_authorization(_decode(self.header(b"authorization")))
        require_scope(principal, WRITE_SCOPE)
        await admit(principal.owner)
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not is_session_id(session_id):
            raise SessionNotFound()
        annotate(session_id=session_id)
        content_type = (self.header(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != JSON:
            raise UnsupportedMediaType()
        return principal, session_id

    def _request(self, principal: Principal, session_id: str, turn: TurnInput) -> TurnRequest:
        idempotent = IdempotentRequest.of(
            _decode(self.header(b"idempotency-key")),
            "turn", session_id, turn.content, turn.params.max_tokens, turn.params.temperature, list(turn.params.stop),
        )  # fmt: skip
        return TurnRequest(
            owner=principal.owner,
            session_id=session_id,
            content=turn.content,
            params=turn.params,
            request_id=request_id(),
            idempotent=idempotent,
        )

    def _wants_stream(self, turn: TurnInput) -> bool:
        if turn.stream is not None:
            return turn.stream
        accept = self.header(b"accept") or b""
        return b"text/event-stream" in accept and b"application/json" not in accept

    async def _reply(self, turn: Turn, request: TurnRequest) -> None:
        outcome = await turn.reply(request)
        turn.observe()
        await self.send_json(200, presenters.turn(outcome), headers={"Server-Timing": turn.server_timing()})

    async def _stream(self, turn: Turn, request: TurnRequest) -> None:
        async with self.unless_gone(turn.stream(request, self._render)):
            # From here on the answer is a 200 event stream; failures become `error` events.
            await self.open_event_stream([(b"server-timing", turn.first_delta_timing().encode())])

            async def failed(exc: Exception) -> None:
                logger.exception("stream relay failed session_id=%s", request.session_id)
                turn.outcome = "internal_error"
                await self._send_event(b"error", problem_for_exception(exc)[0])

            await self.relay_until_gone(turn.relay(self._render), failed)
        turn.observe()
        await self.send_body(b"", more_body=False)

    async def _render(self, event: TurnEvent) -> None:
        if type(event) is Delta:  # the same bytes as _send_event's, without a dict a delta
            await self.send_event(b'event: delta\ndata: {"content":' + orjson.dumps(event.content) + b"}\n\n")
        elif type(event) is TurnDone:
            await self._send_event(b"done", presenters.turn(event.outcome))
        else:
            assert isinstance(event, TurnFailed)
            await self._send_event(b"error", problem_for_exception(event.error)[0])

    async def _send_event(self, event: bytes, data: dict[str, Any]) -> None:
        await self.send_event(b"event: " + event + b"\ndata: " + orjson.dumps(data) + b"\n\n")


def _decode(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
