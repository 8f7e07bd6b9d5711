"""Origin checking for WebSockets, as browsers need it and other clients do not."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalized_origin(value: str) -> str | None:
    """`scheme://host:port` with the default port filled in, or None for anything that is not
    a web origin (`null`, a path, credentials, an unknown scheme)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host.lower()}:{port or _DEFAULT_PORTS[scheme]}"


@functools.cache
def allowed_origins(configured: tuple[str, ...]) -> frozenset[str]:
    origins = set()
    for entry in configured:
        origin = normalized_origin(entry)
        if origin is None:
            raise ImproperlyConfigured(
                f"WEBSOCKET_ALLOWED_ORIGINS: {entry!r} is not an origin; write scheme://host[:port]."
            )
        origins.add(origin)
    return frozenset(origins)


def own_origin(scope: dict[str, Any]) -> str | None:
    """The gateway's own origin as this request names it: its scheme and `Host`."""
    host = _header(scope, b"host")
    if host is None:
        return None
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return normalized_origin(f"{scheme}://{host}")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class BrowserOriginValidator:
    """Lets a browser's WebSocket through only from an allowed origin, compared whole: scheme,
    host and port (a page on another port or over plain HTTP of an allowed host is another
    origin, and browsers treat it as one).

    The allowed origins are `WEBSOCKET_ALLOWED_ORIGINS`; empty, the gateway's own origin
    only (same-origin pages). Clients that send no Origin at all are not browsers and go
    through: they cannot be used for cross-site WebSocket hijacking (nor could a page:
    the gateway authenticates with bearer tokens, never cookies).
    """

    def __init__(self, application: Any) -> None:
        self.application = application
        allowed_origins(tuple(settings.WEBSOCKET_ALLOWED_ORIGINS))  # a bad entry stops the start

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise ValueError("BrowserOriginValidator guards WebSocket connections only")
        if self.valid_origin(scope):
            return await self.application(scope, receive, send)  # type: ignore[no-any-return]
        return await WebsocketDenier()(scope, receive, send)  # type: ignore[no-any-return]

    def valid_origin(self, scope: dict[str, Any]) -> bool:
        sent = _header(scope, b"origin")
        if sent is None:
            return True
        origin = normalized_origin(sent)
        if origin is None:
            return False
        configured = tuple(settings.WEBSOCKET_ALLOWED_ORIGINS)
        if configured:
            return origin in allowed_origins(configured)
        return origin == own_origin(scope)
