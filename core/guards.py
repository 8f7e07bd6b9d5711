"""Bounds applied before routing: the size of a request's head and of its body.

The gateway's server (`core.serving`) refuses a head over `MAX_HEADER_BYTES`
while it arrives; these layers refuse what reaches the application anyway (a
head just under the server's count, any ASGI server) with a problem body: a
large cookie or header costs one 431, not a trip through authentication and the
views; a body over `MAX_REQUEST_BYTES` costs one 413, before anything reads it
into memory or onto disk. Put limits in the ingress too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from core.errors import GatewayError, PayloadTooLarge
from core.problems import send_asgi_problem


class HeadersTooLarge(GatewayError):
    code = "headers_too_large"
    status = 431
    title = "Request header fields too large"
    default_detail = "The request's headers are too large."


class RequestTimeout(GatewayError):
    code = "request_timeout"
    status = 408
    title = "Request timeout"
    default_detail = "The request did not arrive whole in time."


class TooManyConnections(GatewayError):
    code = "too_many_connections"
    status = 503
    title = "Service unavailable"
    default_detail = "The gateway serves as many connections as it can; retry later."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1", "Connection": "close"})


class RequestLimits:
    """Refuse a head (URL and headers) over `MAX_HEADER_BYTES` with 431 (a WebSocket: closed
    before the handshake) and a body over `MAX_REQUEST_BYTES` with 413 as soon as it passes it.

    Django reads a whole body before routing, spooling it to a temporary file
    past 2.5 MB, whoever sends it; the views refuse it only after that. A
    declared `Content-Length` over the limit is refused before a byte is read; a
    body within it cannot outgrow it (the server frames it by that length), so
    only a chunked body is counted as it arrives: the body of a turn passes
    through untouched and uncopied. Once refused, the application reads
    `http.disconnect`, as if the client had left. One pass over the headers
    serves both bounds: this runs on every request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("raw_path") or scope.get("path", "").encode()
        size = len(path) + len(scope.get("query_string", b""))
        length, chunked = 0, False
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                length = _length(value)
            elif name == b"transfer-encoding":
                chunked = True
        if size > settings.MAX_HEADER_BYTES:
            if kind == "http":
                await send_asgi_problem(send, HeadersTooLarge(), instance=scope.get("path"))
            else:
                await send({"type": "websocket.close", "code": 1009})  # refused before the handshake: HTTP 403
            return
        if kind == "websocket" or not (chunked or length > settings.MAX_REQUEST_BYTES):
            await self.app(scope, receive, send)
            return
        if not chunked:
            await send_asgi_problem(send, PayloadTooLarge(), instance=scope.get("path"))
            return
        await self.app(scope, _CountedBody(receive, send, settings.MAX_REQUEST_BYTES, scope.get("path")), send)


def _length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0  # the server refuses such a request before it gets here


class _CountedBody:
    """A `receive` that answers 413 and then says `http.disconnect` once the body passes `limit`."""

    def __init__(self, receive: Any, send: Any, limit: int, path: str | None) -> None:
        self.receive, self.send, self.limit, self.path = receive, send, limit, path
        self.size = 0
        self.refused = False

    async def __call__(self) -> dict[str, Any]:
        if self.refused:
            return {"type": "http.disconnect"}
        message: dict[str, Any] = await self.receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.refused = True
                await send_asgi_problem(self.send, PayloadTooLarge(), instance=self.path)
                return {"type": "http.disconnect"}
        return message
