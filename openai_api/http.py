"""The base of every `/v1/` endpoint: a Channels HTTP consumer with OpenAI's errors.

Every `/v1/` route is a consumer routed ahead of Django (`openai_api.routing`), so
one code path authenticates (the native API's bearer JWT and scopes), rate-limits,
reads bounded JSON bodies and answers every failure in OpenAI's envelope. A
subclass names a coroutine per method in `methods`; it reads the body (if any)
with `read_json()` only after the checks the headers allow.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import orjson
from opentelemetry import propagate

from core.auth import authenticate_authorization, require_scope
from core.auth.principal import READ_SCOPE, WRITE_SCOPE, Principal
from core.departure import ClientGone
from core.errors import InvalidRequest, MethodNotAllowed, UnsupportedMediaType
from core.http_edge import EdgeHttpConsumer, encode_headers, request_id
from core.jsonbody import loads_object
from openai_api.errors import InvalidParam, RouteNotFound, error_for_exception
from sessions_app.pipeline import Render, Turn, admit, refuse_if_draining

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD"})
JSON = b"application/json"


class OpenAIConsumer(EdgeHttpConsumer):
    """Dispatches a `/v1/` request to the method's handler; every failure becomes OpenAI's envelope."""

    # HTTP method -> name of the handler coroutine, `async def handler(self) -> None`.
    methods: ClassVar[dict[str, str]] = {}
    # Whether the route is a turn (refused while the instance drains).
    turn: ClassVar[bool] = False

    principal: Principal
    owner: str  # the principal's, once authenticated

    async def handle(self) -> None:
        try:
            handler = self._handler()
            self.principal = await authenticate_authorization(self.decoded_header(b"authorization"))
            self.owner = self.principal.owner
            require_scope(self.principal, READ_SCOPE if self.scope["method"] in SAFE_METHODS else WRITE_SCOPE)
            await admit(self.owner)
            await handler()
        except ClientGone:
            return
        except Exception as exc:  # noqa: BLE001 - every failure before a response becomes the envelope
            await self.send_error(exc)

    def _handler(self) -> Callable[[], Awaitable[None]]:
        name = self.methods.get(self.scope["method"])
        if name is None:
            raise MethodNotAllowed(sorted(self.methods))
        if self.turn:
            refuse_if_draining()
        handler: Callable[[], Awaitable[None]] = getattr(self, name)
        return handler

    # -- the request ----------------------------------------------------------

    def route_kwarg(self, name: str) -> str:
        return str(self.scope["url_route"]["kwargs"][name])

    def decoded_header(self, name: bytes) -> str | None:
        value = self.header(name)
        return value.decode("latin-1") if value is not None else None

    def query(self) -> dict[str, str]:
        """The query parameters (the last of repeated ones), as strings."""
        raw = self.scope.get("query_string", b"").decode("latin-1")
        try:
            return dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=32))
        except ValueError as exc:
            raise InvalidRequest("Too many query parameters.") from exc

    async def read_json(self, *, optional: bool = False) -> dict[str, Any]:
        """The body as a bounded JSON object (`core.jsonbody`); `{}` for an empty optional one."""
        content_type = (self.header(b"content-type") or b"").split(b";")[0].strip().lower()
        body = await self.read_body()
        if body is None:  # the client left before its body came whole (or it was refused with 413, answered)
            raise ClientGone()
        if optional and not body.strip():
            return {}
        if content_type != JSON:
            raise UnsupportedMediaType()
        return loads_object(body)

    def request_id(self) -> str:
        """The request's id, passed to the model server so its logs line up with ours."""
        return request_id()

    # -- the response ---------------------------------------------------------

    async def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = orjson.dumps(body)
        all_headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})}
        await self.send_response(status, payload, headers=encode_headers(all_headers))

    async def send_error(self, exc: BaseException) -> None:
        status, body, headers = error_for_exception(exc)
        await self.send_json(status, body, {**headers, **trace_headers()})

    # -- Server-Sent Events -----------------------------------------------------

    async def relay_sse(self, turn: Turn, render: Render, *, opening: bytes | None = None) -> None:
        """Inside the pipeline's stream block: send the 200 head (and the `opening` event's data),
        relay the turn's events through `render` (which writes them with `send_sse`) and stop
        the model when the client leaves. The caller ends the body (after its own last event)
        and observes the turn."""
        await self.open_event_stream(
            [(b"server-timing", turn.first_delta_timing().encode()), *encode_headers(trace_headers())]
        )
        if opening is not None:
            await self.send_sse(opening)

        async def failed(exc: Exception) -> None:
            logger.exception("stream relay failed")
            turn.outcome = "internal_error"
            await self.send_sse(orjson.dumps(error_for_exception(exc)[1]))

        await self.relay_until_gone(turn.relay(render), failed)

    async def send_sse(self, data: bytes, event: bytes | None = None) -> None:
        """One event: `data` (and its `event:` name, when it has one)."""
        head = b"event: " + event + b"\n" if event else b""
        await self.send_event(head + b"data: " + data + b"\n\n")


class UnknownRouteConsumer(OpenAIConsumer):
    """Any other path under `/v1/`: 404 in OpenAI's shape (before authentication: it names nothing)."""

    async def handle(self) -> None:
        await self.send_error(RouteNotFound())


def trace_headers() -> dict[str, str]:
    """`traceparent` of the request's span (the access middleware adds `x-request-id`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {"traceparent": carrier["traceparent"]} if "traceparent" in carrier else {}


def integer_param(query: dict[str, str], name: str, *, default: int, low: int, high: int) -> int:
    """A query parameter that must be an integer in [low, high]."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParam(name, f"must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise InvalidParam(name, f"must be an integer from {low} to {high}")
    return value
