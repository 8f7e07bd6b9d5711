"""The raw HTTP consumer both turn APIs build on: it reads its body when it chooses and streams Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from core.departure import ClientGone, Departure, lent
from core.observability.context import current as current_request
from core.observability.context import new_request_id

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]
T = TypeVar("T")


class EdgeHttpConsumer(AsyncHttpConsumer):
    """An HTTP consumer that reads its body when it chooses and keeps an event stream alive.

    It reads the body itself rather than through AsyncHttpConsumer's dispatch,
    which handles one message at a time: a consumer that streams must keep
    listening for the client leaving while it writes. It reads the body only
    after the checks the headers allow (authentication first), so a client
    without a token never makes it wait for a body. The body's size is bounded
    before the consumer sees it (`core.guards.RequestLimits`). The error shape
    is the subclass's (problem+json, OpenAI's envelope). A streamed turn watches its client
    from its start (`unless_gone`), before a head can be sent, so a client that leaves while
    the model thinks stops it at once.
    """

    _last_write: float | None = None  # None: the head is not out, so no heartbeat may go
    _watcher: asyncio.Task[None] | None = None
    _departure: Departure | None = None

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

    def unless_gone(self, stream: AbstractAsyncContextManager[T]) -> AbstractAsyncContextManager[T]:
        """`stream` (the pipeline's `turn.stream(...)`, which is entered once the model's first
        event is in), watching the client from now on: should it leave before that event, the
        model call is cancelled and the turn settled as one never relayed (no lock, no
        Idempotency-Key held, nothing stored), and `ClientGone` raised. `relay_until_gone`
        goes on watching."""
        return _UnlessGone(self, stream)

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
        departure, watcher = self._departure, self._watcher
        if departure is None or watcher is None:  # not begun by `unless_gone`
            departure, watcher = self._watch()
        try:
            # A client that left once the model's first delta was in (or, unwatched before, while
            # it was awaited): the watcher has seen it, or the server answers its first receive at
            # once (uvicorn ignores sends to it, so the relay would "send" the first delta and
            # keep it as a cut-short reply). Not relayed, nothing is kept, and the stream's block
            # settles the turn as unanswered.
            await asyncio.sleep(0)
            if watcher.done():
                relay.close()
                return
            departure.waiting = this
            await relay
        except asyncio.CancelledError:
            departure.waiting = None
            if this.cancelling() > (1 if departure.stopped else 0):
                raise  # the gateway stops the turn: the cancellation goes on
            if departure.stopped:
                this.uncancel()
            # The client left (or the model's call was cancelled under the relay): the model is
            # stopped and what the client saw is kept, by the relay's own rule.
        except Exception as exc:  # noqa: BLE001 - the stream's head is sent: the failure becomes an event
            departure.waiting = None
            watcher.cancel()
            await on_failure(exc)
        finally:
            departure.waiting = None
            watcher.cancel()

    def _watch(self) -> tuple[Departure, asyncio.Task[None]]:
        """Start watching the client: when it leaves, `Departure.leave` stops what waits on it."""
        departure = self._departure = Departure()
        watcher = self._watcher = asyncio.create_task(self._watch_client())
        watcher.add_done_callback(self._watcher_done)
        return departure, watcher

    def _watcher_done(self, watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled() and self._departure is not None:  # it returned (or failed): gone
            self._departure.leave()

    async def _watch_client(self) -> None:
        """Returns when the client disconnects; meanwhile, once the stream's head is out, sends
        a comment line whenever the stream has been quiet for a while, so proxies keep it open."""
        interval = settings.SSE_HEARTBEAT_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            wait = interval
            if self._last_write is not None:
                quiet_for = loop.time() - self._last_write
                if quiet_for >= interval:
                    self._last_write = loop.time()
                    await self.send_body(b": keep-alive\n\n", more_body=True)
                    continue
                wait = interval - quiet_for
            try:
                async with asyncio.timeout(wait):
                    if (await self.receive())["type"] == "http.disconnect":
                        return
            except TimeoutError:
                pass


class _UnlessGone(Generic[T]):
    """`EdgeHttpConsumer.unless_gone`'s context manager: it holds no more than its two fields,
    as it lasts as long as the stream."""

    __slots__ = ("_consumer", "_stream")

    def __init__(self, consumer: EdgeHttpConsumer, stream: AbstractAsyncContextManager[T]) -> None:
        self._consumer = consumer
        self._stream = stream

    async def __aenter__(self) -> T:
        this = asyncio.current_task()
        assert this is not None
        departure, watcher = self._consumer._watch()
        try:
            with lent(departure):
                return await self._stream.__aenter__()
        except BaseException as exc:
            watcher.cancel()
            if departure.stopped:  # the client left while the model was asked: its cancellation taken back
                cancelled_by_others = this.uncancel() > 0
                if isinstance(exc, asyncio.CancelledError) and not cancelled_by_others:
                    raise ClientGone() from None
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        try:
            return await self._stream.__aexit__(kind, exc, traceback)
        finally:
            if self._consumer._watcher is not None:
                self._consumer._watcher.cancel()


def request_id() -> str:
    """The request's id, passed to the model server so its logs line up with ours."""
    info = current_request()
    return info.request_id if info else new_request_id()


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
