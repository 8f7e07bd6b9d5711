"""uvicorn's HTTP protocol with the read bounds it lacks: the size of a head and read timeouts.

uvicorn (httptools) buffers a head of any size and waits for ever for a head or a
body that is slow to come, so a few thousand idle or trickling sockets, all
unauthenticated, were enough to slow every other client. This subclass, which
`core.serving` runs, counts a head's bytes as they arrive and refuses it past
`MAX_HEADER_BYTES` (431); closes a connection whose head is not whole
`REQUEST_HEAD_TIMEOUT_SECONDS` after it opened (or after the first bytes of a
later request), or whose body is not whole `REQUEST_BODY_TIMEOUT_SECONDS` after
its head (408 while no answer has begun); answers the server's connection cap
(`MAX_CONNECTIONS`) with a problem+json 503. When an answer went out before the
body came whole (413, 401), the rest is read and dropped for a moment: a client
that finishes sending keeps its connection, one that does not is closed.

Nothing here runs per request on a kept-alive connection whose request arrives
whole: the timers are armed only while a head or a body is incomplete.

A response of known length (a `content-length` header, as every JSON answer has) leaves in
one write: uvicorn writes the head when the application sends `http.response.start` and the
body when it sends the body, two system calls and two TCP segments that wake the client
twice; `HeadWithBody` holds the head until the body's first write. A chunked response (a
stream) keeps its head's own write, so a stream's headers still leave at once.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.errors import GatewayError
from core.guards import HeadersTooLarge, RequestTimeout, TooManyConnections
from core.problems import PROBLEM_CONTENT_TYPE, problem_from_error, problem_json, send_asgi_problem

# After answering a request whose body is still coming, or refusing a head: how long the rest is
# read and dropped before the connection closes (nginx's lingering_timeout is 5 s).
LINGER_SECONDS = 2.0

# What the connection waits for: a request's head, its body, nothing (the request is whole), or
# nothing ever again (handed to the WebSocket protocol, or refused and lingering).
HEAD, BODY, WHOLE, GONE = "head", "body", "whole", "gone"


@dataclass(frozen=True)
class ReadLimits:
    max_head_bytes: int
    head_timeout: float
    body_timeout: float


class GatewayConfig(uvicorn.Config):
    """uvicorn's configuration, plus the read limits of `GatewayHttpProtocol`."""

    def __init__(self, app: Any, *, read_limits: ReadLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.read_limits = read_limits


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: GatewayConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits = config.read_limits
        self.reading = HEAD
        self.head_bytes = 0  # of the head being read, counted from its first whole read on
        self.head_began = False
        self.upgrade: bool | None = None  # whether this request becomes a WebSocket, once decided
        self.deadline: asyncio.TimerHandle | None = None

    # The connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.reading == GONE:
            return  # answered and lingering: the rest is dropped unread
        if self.reading == HEAD:
            # A read that starts in a head is head up to the end of the read, or the head ends in
            # it: the count never overshoots. (The first read of a later request on a kept-alive
            # connection goes uncounted; RequestLimits sees what it adds.)
            self.head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.reading == HEAD:
            if self.head_bytes > self.limits.max_head_bytes:
                self._refuse(HeadersTooLarge())
            elif self.deadline is None and self._answered():
                self._arm(self.limits.head_timeout)  # (a request sent ahead waits for the answer before)
        elif self.reading == BODY and self.deadline is None and not self.pipeline:
            self._arm(self.limits.body_timeout)  # (a request sent ahead is not read until it runs)

    # The parser's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.reading == WHOLE:
            self._disarm()  # the idle timer after a drained body; this head gets its own
        self.reading = HEAD
        self.head_began = True
        self.upgrade = None
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        self.head_bytes = 0
        self.head_began = False
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        self.reading = GONE if upgrading else BODY  # an upgraded connection is the WebSocket protocol's
        super().on_headers_complete()
        cycle = self.cycle
        if not upgrading and cycle is not None and cycle.transport is self.transport:  # this request's cycle
            cycle.transport = cast(asyncio.Transport, HeadWithBody(self.transport, cycle))  # duck-typed

    def on_message_complete(self) -> None:
        if self.reading == BODY:
            self.reading = WHOLE
            self._disarm()
            if self.cycle.response_complete:  # the rest of an answered request: drained in time
                self._arm(self.timeout_keep_alive)  # idle from here, as after any answer
        super().on_message_complete()

    # Answers -------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.reading == BODY:
            if self.cycle.response_complete:
                # Answered before the body came whole: the parser drops the rest, for a moment.
                self._arm(LINGER_SECONDS)
            elif self.deadline is None:
                self._arm(self.limits.body_timeout)  # a request sent ahead runs now: its body is due
        elif self.reading == HEAD and self.head_began and self.deadline is None:
            self._arm(self.limits.head_timeout)  # the next request began while this one was answered

    def _should_upgrade(self) -> bool:
        # uvicorn caps plain requests only: past the cap, a WebSocket handshake gets the same 503.
        # Decided once per request, as uvicorn asks again at each step of the parse.
        if self.upgrade is None:
            self.upgrade = super()._should_upgrade() and not self._over_the_cap()
        return self.upgrade

    def _over_the_cap(self) -> bool:
        cap = self.limit_concurrency
        return cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if app is service_unavailable:  # over `limit_concurrency`
            app = _too_many_connections
        super()._start_asgi_task(cycle, app)

    def _refuse(self, error: GatewayError) -> None:
        if not self._answered():
            self.transport.close()  # an answer is on its way: no room for another
            return
        self.transport.write(self._response(error))
        self._linger()

    def _answered(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _linger(self) -> None:
        self.reading = GONE
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is whole: the client can read it and leave
        self.flow.resume_reading()
        self._arm(LINGER_SECONDS)

    def _response(self, error: GatewayError) -> bytes:
        body = problem_json(problem_from_error(error))
        head = [b"HTTP/1.1 %d %s\r\n" % (error.status, http.HTTPStatus(error.status).phrase.encode())]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        return b"".join([*head, b"\r\n", body])

    # Timers --------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _deadline_passed(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        answer = False
        if self.reading == HEAD:
            answer = self.head_began  # an idle connection is just closed
        elif self.reading == BODY:
            cycle = self.cycle
            answer = not cycle.response_started
            cycle.disconnected = True  # the application reads `http.disconnect`, and sends nothing more
            cycle.message_event.set()
        if answer:
            self.transport.write(self._response(RequestTimeout()))
        self.transport.close()


class HeadWithBody:
    """A request cycle's view of the connection's transport that sends the head of a response of
    known length together with the body's first write (see the module's docstring).

    The head is the cycle's first write once its response has started (a `100 Continue` is
    written before, and passes); it is held only when uvicorn found a `content-length` in it
    (`chunked_encoding is False`) and the request is not a HEAD (whose body is never written).
    Closing the transport sends a held head first. Everything else is the transport's own.
    """

    __slots__ = ("_cycle", "_head", "_head_seen", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._head_seen and self._cycle.response_started:
            self._head_seen = True
            cycle = self._cycle
            if cycle.chunked_encoding is False and cycle.scope["method"] != "HEAD":
                self._head = data
                return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    await send_asgi_problem(send, TooManyConnections())
