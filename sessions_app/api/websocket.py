"""`/ws/v1/sessions/{id}`: a session's turns over one WebSocket, streamed, one at a time.

Browsers cannot set headers on a WebSocket, so the bearer token comes as the
subprotocol pair `bearer, <token>` (the server answers with `bearer`) or, as a
last resort, an `access_token` query parameter. Before any content, a failed
check closes the connection with:
  4401  no token, or a token that is invalid or expired
  4403  the token lacks the `chat.write` scope
  4404  no such session (or another owner's)
  4429  the owner holds `RATE_LIMIT_SOCKETS_PER_OWNER` WebSockets already
  1013  the session store cannot be reached; try again later
Once open, a run of `WEBSOCKET_MAX_REFUSED_FRAMES` refused frames in a row (each answered
with an error frame) closes it with 1008.

Client frames: `{"type": "message", "content", "max_tokens"?, "temperature"?, "stop"?}`
and `{"type": "cancel"}`. Server frames: `{"type": "delta", "content"}`, `{"type":
"done", "message", "user_message", "usage", "finish_reason"}` (after a cancel:
`finish_reason` "cancelled" and the partial reply, or nulls when nothing was kept),
and `{"type": "error", "code", "status", "detail"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import orjson
import structlog
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from opentelemetry import trace

from core.auth import authenticate_authorization, require_scope
from core.auth.principal import WRITE_SCOPE, Principal
from core.errors import Forbidden, GatewayError, InvalidRequest, PayloadTooLarge, StoreUnavailable, Unauthenticated
from core.observability.context import annotate
from core.observability.tracing import child_span
from core.problems import problem_for_exception
from core.result import Err, Ok
from limits.errors import OwnerSocketLimit
from limits.wiring import get_limiter
from llm_backend.ports import Delta
from sessions_app.api import presenters
from sessions_app.api.turn_input import TurnInput, parse_object, turn_from_data
from sessions_app.domain import is_session_id
from sessions_app.errors import TurnInProgress
from sessions_app.pipeline import Turn, TurnDone, TurnEvent, TurnFailed, TurnRequest, admit, refuse_if_draining
from sessions_app.wiring import get_session_manager

log = structlog.get_logger("gateway.websocket")
tracer = trace.get_tracer("gateway.websocket")
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008
SUBPROTOCOL = "bearer"


class SessionSocketConsumer(AsyncWebsocketConsumer):
    principal: Principal
    session_id: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn: asyncio.Task[None] | None = None
        self._running: Turn | None = None  # the turn of `_turn`, once it runs
        self._done_sent = False
        self._answered = False
        self._socket_id: str | None = None  # counted against the owner's open sockets
        self._keeper: asyncio.Task[None] | None = None
        self._refused_in_row = 0
        self._closing = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        # No database on this path: skip Channels' per-message stale-connection cleanup (a thread hop).
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # -- connecting -------------------------------------------------------------

    async def connect(self) -> None:
        token, offered = self._token()
        # Accept first: a close code can only reach a client that is connected.
        await self.accept(SUBPROTOCOL if offered else None)
        try:
            if token is None:
                raise Unauthenticated("A bearer token is required.")
            self.principal = await authenticate_authorization(f"Bearer {token}")
            require_scope(self.principal, WRITE_SCOPE)
        except Unauthenticated:
            await self.close(CLOSE_UNAUTHENTICATED)
            return
        except Forbidden:
            await self.close(CLOSE_FORBIDDEN)
            return
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        annotate(session_id=self.session_id)
        if not is_session_id(self.session_id):
            await self.close(CLOSE_NOT_FOUND)
            return
        match await get_session_manager().selectors.session_exists(
            owner=self.principal.owner, session_id=self.session_id
        ):
            case Ok(False):
                await self.close(CLOSE_NOT_FOUND)
                return
            case Err():
                await self.close(CLOSE_TRY_AGAIN_LATER)
                return
        await self._count_socket()

    async def _count_socket(self) -> None:
        """Count this socket against the owner's open sockets (in Redis, across instances) and
        keep it counted while it is open: an entry not kept lapses, should this instance die."""
        socket_id = uuid.uuid4().hex
        limiter = get_limiter()
        try:
            await limiter.open_socket(self.principal.owner, socket_id)
        except OwnerSocketLimit:
            await self.close(CLOSE_TOO_MANY_SOCKETS)
            return
        except StoreUnavailable:
            await self.close(CLOSE_TRY_AGAIN_LATER)
            return
        self._socket_id = socket_id
        self._keeper = asyncio.create_task(self._keep_socket(socket_id, limiter.limits.socket_seconds / 3))

    async def _keep_socket(self, socket_id: str, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(GatewayError):  # missed once: the next keep comes before the lapse
                await get_limiter().open_socket(self.principal.owner, socket_id)

    def _token(self) -> tuple[str | None, bool]:
        """The token, and whether it came as the `bearer` subprotocol."""
        protocols = [p.strip() for p in self.scope.get("subprotocols", [])]
        if SUBPROTOCOL in protocols:
            index = protocols.index(SUBPROTOCOL)
            if index + 1 < len(protocols):
                return protocols[index + 1], True
        if self.scope.get("gateway.access_token"):  # moved out of the URL by QueryTokenScrubber
            return self.scope["gateway.access_token"], False
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        tokens = query.get("access_token")
        return (tokens[0] if tokens else None), False

    async def disconnect(self, code: int) -> None:
        await self._stop_turn()
        if self._keeper is not None:
            self._keeper.cancel()
        if self._socket_id is not None:
            with contextlib.suppress(GatewayError):  # not freed: it lapses by itself
                await get_limiter().close_socket(self.principal.owner, self._socket_id)
            self._socket_id = None

    # -- frames -------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closing:  # frames already on their way when we closed: not answered
            return
        try:
            raw = text_data.encode() if text_data is not None else bytes_data or b""
            if len(raw) > settings.MAX_REQUEST_BYTES:
                raise PayloadTooLarge("The frame is larger than the largest request body.")
            frame = parse_object(raw)
            kind = frame.get("type")
            if kind == "message":
                await self._start_turn(turn_from_data(frame))
            elif kind == "cancel":
                await self._cancel_turn()
            else:
                raise InvalidRequest("type: must be 'message' or 'cancel'.")
        except GatewayError as exc:
            await self._send_frame("error", problem_for_exception(exc)[0])
            if exc.status < 500:  # the client's doing, not the gateway's
                await self._refused()
        else:
            self._refused_in_row = 0

    async def _refused(self) -> None:
        """Answering refused frames forever would let one client keep the gateway busy for
        nothing: a run of them ends the connection."""
        self._refused_in_row += 1
        limit = settings.WEBSOCKET_MAX_REFUSED_FRAMES
        if limit and self._refused_in_row >= limit:
            self._closing = True
            await self._stop_turn()
            await self.close(CLOSE_POLICY_VIOLATION)

    async def _start_turn(self, parsed: TurnInput) -> None:
        if self._turn is not None and not self._turn.done():
            if not self._answered:
                raise TurnInProgress("This connection is already streaming a reply; wait for it or cancel it.")
            await self._turn  # its last frame is out; only its bookkeeping is left
        refuse_if_draining()
        if self.principal.expires_at <= time.time():
            await self._send_frame("error", problem_for_exception(Unauthenticated("The token has expired."))[0])
            await self.close(CLOSE_UNAUTHENTICATED)
            return
        await admit(self.principal.owner)
        self._running, self._done_sent, self._answered = None, False, False
        self._turn = asyncio.create_task(self._run_turn(parsed))

    async def _run_turn(self, parsed: TurnInput) -> None:
        turn = self._running = Turn(mode="ws")
        turn_id = uuid.uuid4().hex
        request = TurnRequest(
            owner=self.principal.owner,
            session_id=self.session_id,
            content=parsed.content,
            params=parsed.params,
            request_id=turn_id,
        )
        span = child_span(tracer, "websocket turn", attributes={"gateway.turn_id": turn_id})
        try:
            async with turn.stream(request, self._render, span=span):
                await turn.relay(self._render)
        except GatewayError as exc:
            turn.fail(exc)
            await self._render(TurnFailed(exc))
        finally:
            turn.observe()
            stored = turn.result
            log.info(
                "ws_turn",
                turn_id=turn_id,
                session_id=self.session_id,
                model=get_session_manager().policy.model_label(stored.session.model) if stored else None,
                input_tokens=stored.usage.input_tokens if stored else None,
                output_tokens=stored.usage.output_tokens if stored else None,
                outcome=turn.outcome,
                duration_ms=round((asyncio.get_running_loop().time() - turn.started) * 1000, 2),
            )

    async def _cancel_turn(self) -> None:
        if self._turn is None or self._turn.done():
            raise InvalidRequest("No reply is streaming; there is nothing to cancel.")
        await self._stop_turn()
        if not self._done_sent:
            outcome = self._running.result if self._running else None
            await self._send_frame(
                "done",
                {
                    "message": presenters.message(outcome.message) if outcome else None,
                    "user_message": presenters.message(outcome.user_message) if outcome else None,
                    "usage": presenters.usage(outcome.usage) if outcome else {"input_tokens": 0, "output_tokens": 0},
                    "finish_reason": "cancelled",
                },
            )

    async def _stop_turn(self) -> None:
        """Cancel the running turn and wait until what it keeps is stored."""
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._turn

    async def _render(self, event: TurnEvent) -> None:
        if type(event) is Delta:
            # Straight to the server: the consumer's send would add two coroutines to every delta.
            text = orjson.dumps({"type": "delta", "content": event.content}).decode()
            await self.base_send({"type": "websocket.send", "text": text})
        elif type(event) is TurnDone:
            await self._send_frame("done", presenters.turn(event.outcome))
        else:
            assert isinstance(event, TurnFailed)
            await self._send_frame("error", problem_for_exception(event.error)[0])

    async def _send_frame(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "done":
            self._done_sent = True
        if kind in ("done", "error") and asyncio.current_task() is self._turn:
            self._answered = True  # the turn's last frame
        if kind == "error":
            data = {"code": data["code"], "status": data["status"], "detail": data["detail"]}
        await self.send(text_data=orjson.dumps({"type": kind, **data}).decode())


class UnknownSocketConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: closed at once with 4404."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(CLOSE_NOT_FOUND)
