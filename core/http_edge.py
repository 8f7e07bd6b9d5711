"""The raw HTTP consumer both turn APIs build on: it reads its body when it chooses and streams Server-Sent Events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from core.observability.context import current as current_request

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


class EdgeHttpConsumer(AsyncHttpConsumer):
    """An HTTP consumer that reads its body when it chooses and keeps an event stream alive.

    It reads the body itself rather than through AsyncHttpConsumer's dispatch,
    which handles one message at a time: a consumer that streams must keep
    listening for the client leaving while it writes. It reads the body only
    after the checks the headers allow (authentication first), so a client
    without a token never makes it wait for a body. The body's size is bounded
    before the consumer sees it (`core.guards.RequestLimits`). The error shape
    is the subclass's (problem+json, OpenAI's envelope).
    """

    _last_write = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        self.receive = receive
        await self.handle()

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

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

    async def open_event_stream(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The 200 head of an event stream, with `headers` beside the stream's own."""
        await self.send_headers(status=200, headers=[*SSE_HEADERS, *headers])
        self._last_write = asyncio.get_running_loop().time()

    async def send_event(self, event: bytes) -> None:
        """One whole event, `event:`/`data:` lines and the blank line that ends it."""
        self._last_write = asyncio.get_running_loop().time()
        await self.send_body(event, more_body=True)

    async def relay_until_gone(
        self, relay: Coroutine[Any, Any, None], on_failure: Callable[[Exception], Awaitable[None]]
    ) -> None:
        """Run `relay` (which writes the events) until it ends or the client leaves, and then
        stop it; `on_failure` is awaited, inside the except block, when it raised."""
        writer = asyncio.create_task(relay)
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
            except Exception as exc:  # noqa: BLE001 - the stream's head is sent: the failure becomes an event
                await on_failure(exc)

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


def request_id() -> str:
    """The request's id, passed to the model server so its logs line up with ours."""
    info = current_request()
    return info.request_id if info else uuid.uuid4().hex


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
