"""What the gateway's HTTP protocol writes to a connection: a response of known length in one
write, a stream's head at once, a `100 Continue` before the body is read.

The real protocol and uvicorn's request cycle run on this test's loop; the transport records
the writes (a socket would merge or split them as the kernel likes, so it cannot tell them
apart).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.server import ServerState

from core.http_protocol import GatewayConfig, GatewayHttpProtocol, ReadLimits

LIMITS = ReadLimits(max_head_bytes=8192, head_timeout=5.0, body_timeout=5.0)


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def exchange(app: Any, request: bytes) -> RecordingTransport:
    config = GatewayConfig(app, read_limits=LIMITS, lifespan="off", proxy_headers=False)
    protocol = GatewayHttpProtocol(config, ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(50):  # the application runs as a task of this loop
        if protocol.cycle.response_complete:
            break
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


def answer(*chunks: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    return app


GET = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"


async def test_a_response_of_known_length_leaves_in_one_write() -> None:
    transport = await exchange(answer(b'{"ok":true}', headers=[(b"content-length", b"11")]), GET)

    (write,) = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b'\r\n\r\n{"ok":true}')
    assert b"content-length: 11\r\n" in write


async def test_a_body_in_several_parts_sends_the_head_with_the_first() -> None:
    transport = await exchange(answer(b"abc", b"def", headers=[(b"content-length", b"6")]), GET)

    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\nabc") and transport.writes[1] == b"def"


async def test_a_chunked_stream_sends_its_head_at_once() -> None:
    transport = await exchange(answer(b"data: 1\n\n", b"", headers=[(b"content-type", b"text/event-stream")]), GET)

    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in transport.writes[0]
    assert transport.writes[1] == b"9\r\ndata: 1\n\n\r\n"


async def test_a_head_request_gets_its_head_though_no_body_is_written() -> None:
    transport = await exchange(
        answer(b"", headers=[(b"content-length", b"11")]), b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n"
    )

    (write,) = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\n")


async def test_100_continue_is_written_before_the_body_is_read_and_the_answer_after() -> None:
    request = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    config = GatewayConfig(answer(b"ok", headers=[(b"content-length", b"2")]), read_limits=LIMITS, lifespan="off")
    protocol = GatewayHttpProtocol(config, ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(10):
        await asyncio.sleep(0)

    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # not held back: the client waits for it
    protocol.data_received(b"hi")
    for _ in range(10):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b"\r\n\r\nok")


async def test_a_held_head_goes_out_when_the_application_fails_before_the_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        raise RuntimeError("boom")

    transport = await exchange(app, GET)

    assert transport.closed
    (write,) = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
