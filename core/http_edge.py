"""The raw HTTP consumer both turn APIs build on: it reads its body when it chooses and streams Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from core.observability.context import current as current_request
from core.observability.context import new_request_id

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
        # Straight to the server: send_body and send would add two coroutines to every delta.
        await self.base_send({"type": "http.response.body", "body": event, "more_body": True})

    async def relay_until_gone(
        self, relay: Coroutine[Any, Any, None], on_failure: Callable[[Exception], Awaitable[None]]
    ) -> None:
        """Run `relay` (which writes the events) until it ends or the client leaves, and then
        stop it (never start it when the client has left already); `on_failure` is awaited,
        inside the except block, when it raised.

        The relay runs in this task and only the watcher gets one of its own (a task per open
        stream less, and no `asyncio.wait` per stream): when the client leaves, the watcher
        cancels this task while it is still relaying, and that cancellation is taken back here.
        """
        this = asyncio.current_task()
        assert this is not None
        relaying = True
        stopped_by_watcher = False

        def client_left(watcher: asyncio.Task[None]) -> None:
            nonlocal stopped_by_watcher
            if relaying and not watcher.cancelled():  # it returned (or failed): stop the relay
                stopped_by_watcher = True
                this.cancel()

        watcher = asyncio.create_task(self._watch_client())
        watcher.add_done_callback(client_left)
        try:
            # A client that left while the model's first delta was awaited: the server knows it
            # already and answers the watcher's first receive at once (uvicorn ignores sends to
            # it, so the relay would "send" the first delta and keep it as a cut-short reply).
            # Not relayed, nothing is kept, and the stream's block settles the turn as unanswered.
            await asyncio.sleep(0)
            if watcher.done():
                relay.close()
                return
            await relay
        except asyncio.CancelledError:
            relaying = False
            if this.cancelling() > (1 if stopped_by_watcher else 0):
                raise  # the gateway stops the turn: the cancellation goes on
            if stopped_by_watcher:
                this.uncancel()
            # The client left (or the model's call was cancelled under the relay): the model is
            # stopped and what the client saw is kept, by the relay's own rule.
        except Exception as exc:  # noqa: BLE001 - the stream's head is sent: the failure becomes an event
            relaying = False
            watcher.cancel()
            await on_failure(exc)
        finally:
            relaying = False
            watcher.cancel()

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
    return info.request_id if info else new_request_id()


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
