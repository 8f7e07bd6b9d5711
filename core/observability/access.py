"""The outermost ASGI layer: a request id, an access-log line and the HTTP metrics for every
request and WebSocket connection."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import structlog

from core.observability import context, metrics

log = structlog.get_logger("gateway.access")

# Routes as templates, so labels and span names stay few: ids become {id}.
_UUID = re.compile(r"/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?=/|$)")
# The kernel's own routes; each app adds its own with `label_routes` (in its AppConfig.ready).
_KNOWN = {"/healthz", "/readyz", "/metrics", "/api/schema/", "/api/docs/", "/dev/jwks.json"}


_IDS: list[re.Pattern[str]] = []  # apps' own id shapes, as path segments


def label_routes(*templates: str, ids: str | None = None) -> None:
    """Label requests to these routes (ids written `{id}`) by their template; any other path is
    `other` (or `/admin/...`, `/static/...`), so a scan of made-up URLs cannot grow the labels.
    `ids`: a regular expression of the app's own ids (besides UUIDs), matched as whole segments."""
    _KNOWN.update(templates)
    if ids:
        _IDS.append(re.compile(f"/(?:{ids})(?=/|$)"))


def route_of(path: str) -> str:
    templated = _UUID.sub("/{id}", path)
    for ids in _IDS:
        templated = ids.sub("/{id}", templated)
    if templated in _KNOWN:
        return templated
    if templated.startswith("/admin/"):
        return "/admin/..."
    if templated.startswith("/static/"):
        return "/static/..."
    return "other"


class QueryTokenScrubber:
    """The outermost layer: moves an `access_token` query parameter out of the query string into
    the scope, so no later layer (tracing, logs) ever sees a token in a URL. Only the WebSocket
    consumer reads it from there; an HTTP request's is dropped (HTTP takes tokens by header),
    but a client that sends one anyway must not have it recorded in a span's URL either. The
    server's own log lines, written from the unscrubbed scope, are redacted by
    core/observability/logs.py."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(_without_query_token(scope), receive, send)


class AccessMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # The header looked up (the last one wins), not a dict of them all: this frame lives as
        # long as a stream does.
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = value
        info = context.start(context.request_id_from(given), route_of(scope.get("path", "")))
        started = time.perf_counter()
        status = 0
        sent = 0
        request_id_header = (b"x-request-id", info.request_id.encode())

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), request_id_header]}
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "websocket.accept":
                status = 101
                message = {**message, "headers": [*message.get("headers", []), request_id_header]}
            elif kind == "websocket.send":
                sent += len(message.get("text") or message.get("bytes") or b"")
            elif kind == "websocket.close" and not status:
                status = 403  # refused before it was accepted
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            status = status or 500
            raise
        finally:
            duration = time.perf_counter() - started
            kind = "websocket" if scope["type"] == "websocket" else scope.get("method", "")
            metrics.HTTP_DURATION_BY(info.route, kind, str(status)).observe(duration)
            log.info(
                "request",
                method=kind,
                route=info.route,
                status=status,
                duration_ms=round(duration * 1000, 2),
                bytes_out=sent,
                session_id=info.session_id,
                owner=info.owner,
                model=info.model,
                input_tokens=info.input_tokens,
                output_tokens=info.output_tokens,
                outcome=info.outcome,
                **info.extra,
            )
            structlog.contextvars.clear_contextvars()


def _without_query_token(scope: dict[str, Any]) -> dict[str, Any]:
    if scope["type"] not in ("http", "websocket") or b"access_token" not in scope.get("query_string", b""):
        return scope
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    token = next((v for k, v in pairs if k == "access_token"), None)
    rest = urlencode([(k, v) for k, v in pairs if k != "access_token"]).encode("latin-1")
    return {**scope, "query_string": rest, "gateway.access_token": token}
