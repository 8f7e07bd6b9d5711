"""The turn endpoint, `POST /api/v1/sessions/{id}/messages`, as a Channels HTTP consumer.

It is the hot path, so it runs outside Django's request machinery (routed in
`config/asgi.py` ahead of Django) and shares with the DRF views only what
matters: the authentication function, the error mapping and the
`SessionManager`. It answers JSON, or Server-Sent Events when the body says
`"stream": true` or the client accepts only `text/event-stream`.
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
from core.errors import GatewayError, MethodNotAllowed, UnsupportedMediaType
from core.limits import get_limiter
from core.observability import metrics
from core.observability.context import annotate
from core.observability.context import current as current_request
from core.problems import PROBLEM_CONTENT_TYPE, problem_for_exception
from core.result import unwrap
from core.shutdown import ShuttingDown, Ticket, drain, taken_back
from sessions_app.api import presenters
from sessions_app.api.streaming import Relayed, observe_turn, owner_stream, relay_turn, slots
from sessions_app.api.turn_input import TurnInput, parse_turn
from sessions_app.domain import is_session_id
from sessions_app.errors import SessionNotFound
from sessions_app.idempotency import IdempotentRequest
from sessions_app.turn_stream import RunningTurn
from sessions_app.wiring import get_session_manager

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
    async def handle(self) -> None:
        self._started = asyncio.get_running_loop().time()
        self._idempotent: IdempotentRequest | None = None
        mode = "json"
        try:
            drain.check()  # a draining instance takes no new turns
            principal, session_id = await self._admit()
            body = await self.read_body()
            if body is None:
                return  # the client left, or its body was too large (answered)
            turn = self._turn(session_id, body)
            if self._wants_stream(turn):
                mode = "sse"
                await self._stream(principal, session_id, turn)
            else:
                await self._reply(principal, session_id, turn)
        except Exception as exc:  # noqa: BLE001 - every failure before a response becomes a problem
            code = exc.code if isinstance(exc, GatewayError) else "internal_error"
            observe_turn(mode=mode, outcome=code, started=self._started, relayed=None, turn=None)
            await self.send_problem(exc)

    async def _admit(self) -> tuple[Principal, str]:
        """Everything the headers decide, before a byte of the body is read."""
        if self.scope["method"] != "POST":
            raise MethodNotAllowed(["POST"])
        principal = await authenticate_authorization(_decode(self.header(b"authorization")))
        require_scope(principal, WRITE_SCOPE)
        await get_limiter().admit(principal.owner)
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not is_session_id(session_id):
            raise SessionNotFound()
        annotate(session_id=session_id)
        content_type = (self.header(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != JSON:
            raise UnsupportedMediaType()
        return principal, session_id

    def _turn(self, session_id: str, body: bytes) -> TurnInput:
        turn = parse_turn(body)
        self._idempotent = IdempotentRequest.of(
            _decode(self.header(b"idempotency-key")),
            "turn", session_id, turn.content, turn.params.max_tokens, turn.params.temperature, list(turn.params.stop),
        )  # fmt: skip
        return turn

    def _wants_stream(self, turn: TurnInput) -> bool:
        if turn.stream is not None:
            return turn.stream
        accept = self.header(b"accept") or b""
        return b"text/event-stream" in accept and b"application/json" not in accept

    async def _reply(self, principal: Principal, session_id: str, turn: TurnInput) -> None:
        with drain.turn() as ticket:
            try:
                result = await get_session_manager().turns.turn_send(
                    owner=principal.owner,
                    session_id=session_id,
                    content=turn.content,
                    params=turn.params,
                    request_id=_request_id(),
                    idempotent=self._idempotent,
                )
            except asyncio.CancelledError:
                if not ticket.stopped:
                    raise
                taken_back()  # stopped by the shutdown: nothing was stored; say so
                raise ShuttingDown() from None
        outcome = unwrap(result)
        observe_turn(mode="json", outcome="ok", started=self._started, relayed=None, turn=outcome)
        await self.send_json(200, presenters.turn(outcome), headers={"Server-Timing": self._server_timing()})

    def _server_timing(self) -> str:
        """The gateway's own share of the turn and the model server's, in milliseconds."""
        info = current_request()
        backend = info.backend_seconds if info else 0.0
        overhead = max(0.0, asyncio.get_running_loop().time() - self._started - backend)
        metrics.OVERHEAD.observe(overhead)
        return f"gateway;dur={overhead * 1000:.2f}, backend;dur={backend * 1000:.2f}"

    async def _stream(self, principal: Principal, session_id: str, turn: TurnInput) -> None:
        async with owner_stream(principal.owner):
            with slots.slot(), drain.turn() as ticket:
                self._relayed = Relayed()
                self._running: RunningTurn | None = None
                try:
                    await self._stream_turn(principal, session_id, turn, ticket)
                except asyncio.CancelledError:
                    if not ticket.stopped:
                        raise
                    taken_back()
                    if self._running is None:  # before the stream began: nothing was stored
                        raise ShuttingDown() from None
                    # Cut short by the shutdown: the client keeps what it saw, and learns why.
                    self._relayed.outcome = ShuttingDown.code
                    await self._send_event("error", problem_for_exception(ShuttingDown())[0])
                observe_turn(
                    mode="sse",
                    outcome=self._relayed.outcome,
                    started=self._started,
                    relayed=self._relayed,
                    turn=self._running.outcome if self._running else None,
                )
                await self.send_body(b"", more_body=False)

    async def _stream_turn(self, principal: Principal, session_id: str, turn: TurnInput, ticket: Ticket) -> None:
        stream = unwrap(
            await get_session_manager().turns.turn_stream(
                owner=principal.owner,
                session_id=session_id,
                content=turn.content,
                params=turn.params,
                request_id=_request_id(),
                idempotent=self._idempotent,
            )
        )
        self._running = stream
        ticket.on_stop(stream.interrupt)
        # From here on the answer is a 200 event stream; failures become `error` events.
        headers = [*SSE_HEADERS, (b"server-timing", self._first_delta_timing().encode())]
        await self.send_headers(status=200, headers=headers)
        self._last_write = asyncio.get_running_loop().time()
        relayed = self._relayed
        writer = asyncio.create_task(relay_turn(stream, self._send_event, relayed))
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
                logger.exception("stream relay failed session_id=%s", session_id)
                relayed.outcome = "internal_error"
                await self._send_event("error", problem_for_exception(exc)[0])

    def _first_delta_timing(self) -> str:
        """Known when the stream's head goes out: the gateway's share of the wait for the first delta."""
        info = current_request()
        backend = info.backend_seconds if info else 0.0
        overhead = max(0.0, asyncio.get_running_loop().time() - self._started - backend)
        return f'gateway;dur={overhead * 1000:.2f}, backend;desc="first delta";dur={backend * 1000:.2f}'

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

    async def _send_event(self, event: str, data: dict[str, Any]) -> None:
        self._last_write = asyncio.get_running_loop().time()
        await self.send_body(b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n", more_body=True)


def _request_id() -> str:
    """The request's id, passed to the model server so its logs line up with ours."""
    info = current_request()
    return info.request_id if info else uuid.uuid4().hex


def _decode(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
