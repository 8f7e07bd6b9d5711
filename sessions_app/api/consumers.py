"""The turn endpoint, `POST /api/v1/sessions/{id}/messages`, as a Channels HTTP consumer.

It is the hot path, so it runs outside Django's request machinery (routed in
`config/asgi.py` ahead of Django) and shares with the DRF views only what
matters: the authentication function and the error mapping. The turn itself goes
through the turn pipeline (`sessions_app.pipeline`); this consumer parses it and
renders it as JSON, or as Server-Sent Events when the body says `"stream": true` or
the client accepts only `text/event-stream`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from core.auth import authenticate_authorization, require_scope
from core.auth.principal import WRITE_SCOPE, Principal
from core.errors import MethodNotAllowed, UnsupportedMediaType
from core.observability.context import annotate
from core.observability.context import current as current_request
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
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


class HttpEdgeConsumer(AsyncHttpConsumer):
    """An HTTP consumer that reads its body when it chooses, with problem+json errors.

    It reads the body itself rather than through AsyncHttpConsumer's dispatch,
    which handles one message at a time: a consumer that streams must keep
    listening for the client leaving while it writes. It reads the body only
    after the checks the headers allow (authentication first), so a client
    without a token never makes it wait for a body. The body's size is bounded
    before the consumer sees it (`core.guards.RequestLimits`).
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        self.receive = receive
        await self.handle()

    async def read_body(self) -> bytes | None:
        """The whole body, or None when the client left (or its body was refused with 413)."""
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

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
            request_id=_request_id(),
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
        async with turn.stream(request, self._render):
            # From here on the answer is a 200 event stream; failures become `error` events.
            headers = [*SSE_HEADERS, (b"server-timing", turn.first_delta_timing().encode())]
            await self.send_headers(status=200, headers=headers)
            self._last_write = asyncio.get_running_loop().time()
            writer = asyncio.create_task(turn.relay(self._render))
            watcher = asyncio.create_task(self._watch_client())
            try:
                await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                watcher.cancel()
                if not writer.done():
                    writer.cancel()  # the client left (or the gateway stops): stop the model, keep what it saw
                try:
                    await writer
                except asyncio.CancelledError:
                    pass
                except Exception as exc:
                    logger.exception("stream relay failed session_id=%s", request.session_id)
                    turn.outcome = "internal_error"
                    await self._send_event(b"error", problem_for_exception(exc)[0])
        turn.observe()
        await self.send_body(b"", more_body=False)

    async def _render(self, event: TurnEvent) -> None:
        if type(event) is Delta:
            await self._send_event(b"delta", {"content": event.content})
        elif type(event) is TurnDone:
            await self._send_event(b"done", presenters.turn(event.outcome))
        else:
            assert isinstance(event, TurnFailed)
            await self._send_event(b"error", problem_for_exception(event.error)[0])

    async def _watch_client(self) -> None:
        """Returns when the client disconnects; meanwhile sends a comment line whenever the
        stream has been quiet for a while, so proxies keep it open."""
        interval = settings.SSE_HEARTBEAT_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            quiet_for = loop.time() - self._last_write
            if quiet_for >= interval:
                self._last_write = loop.time()
                await self.send_body(b": keep-alive\n\n", more_body=True)
                continue
            try:
                async with asyncio.timeout(interval - quiet_for):
                    if (await self.receive())["type"] == "http.disconnect":
                        return
            except TimeoutError:
                pass

    async def _send_event(self, event: bytes, data: dict[str, Any]) -> None:
        self._last_write = asyncio.get_running_loop().time()
        await self.send_body(b"event: " + event + b"\ndata: " + orjson.dumps(data) + b"\n\n", more_body=True)


def _request_id() -> str:
    """The request's id, passed to the model server so its logs line up with ours."""
    info = current_request()
    return info.request_id if info else uuid.uuid4().hex


def _decode(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
