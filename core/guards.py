"""Bounds applied before routing: the size of a request's head.

The ASGI server parses headers without a size limit (httptools has none), so the
gateway refuses oversized heads itself: a 2 MB cookie or header costs one 431,
not a trip through authentication and the views. Put a limit in the ingress too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from core.errors import GatewayError
from core.problems import send_asgi_problem


class HeadersTooLarge(GatewayError):
    code = "headers_too_large"
    status = 431
    title = "Request header fields too large"
    default_detail = "The request's headers are too large."


class HeadLimit:
    """Refuse requests whose headers and URL together exceed `MAX_HEADER_BYTES`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and head_size(scope) > settings.MAX_HEADER_BYTES:
            if scope["type"] == "http":
                await send_asgi_problem(send, HeadersTooLarge(), instance=scope.get("path"))
            else:
                await send({"type": "websocket.close", "code": 1009})  # refused before the handshake: HTTP 403
            return
        await self.app(scope, receive, send)


def head_size(scope: dict[str, Any]) -> int:
    path = scope.get("raw_path") or scope.get("path", "").encode()
    return len(path) + len(scope.get("query_string", b"")) + sum(len(k) + len(v) + 4 for k, v in scope["headers"])
