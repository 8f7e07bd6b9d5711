"""What the gateway adds to a streamed reply, and how many streams one process holds.

1. Time to first delta and total stream time for 50-delta replies, through the gateway
   (SSE and WebSocket) and straight from the echo model server over gRPC, at 1, 16 and
   64 concurrent streams, with streams per second.
2. Capacity: opens --open streams at once against a model that pauses after its first
   word, and reports how many the gateway held and its memory per open stream (growth
   of the gateway's resident memory over a warmed-up baseline).

Everything runs on this machine; the real Redis is the active store.

    python bench/stream_overhead.py [--seconds 5] [--concurrency 1,16,64] [--open 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from common import RawHttp, percentile, raise_fd_limit, rss_kib, stack
from websockets.asyncio.client import connect

from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Delta, Role

WORDS = " ".join(f"w{i}" for i in range(49))  # "Echo: " plus 49 words: 50 deltas
TURNS_PER_SESSION = 10
Stream = Callable[[], Awaitable[tuple[float, float] | str]]  # timings, or the error code


@dataclass
class Stats:
    label: str
    concurrency: int
    first: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        first_p50, first_p99 = percentile(self.first, 0.5) * 1000, percentile(self.first, 0.99) * 1000
        return (
            f"{self.label:<20} c={self.concurrency:<3} {self.rate:7.0f} streams/s"
            f"   first delta p50 {first_p50:6.2f} ms p99 {first_p99:7.2f} ms"
            f"   whole stream p50 {percentile(self.total, 0.5) * 1000:6.2f} ms"
            + (f"   errors {dict(self.errors)}" if self.errors else "")
        )

    @property
    def rate(self) -> float:
        return len(self.total) / self.elapsed

    @property
    def first_p50(self) -> float:
        return percentile(self.first, 0.5) * 1000


async def drive(label: str, concurrency: int, seconds: float, make: Callable[[int], Awaitable[Stream]]) -> Stats:
    workers = [await make(i) for i in range(concurrency)]
    stats = Stats(label, concurrency)
    deadline = time.perf_counter() + seconds

    async def loop(stream: Stream) -> None:
        while time.perf_counter() < deadline:
            result = await stream()
            if isinstance(result, str):
                stats.errors[result] += 1
            else:
                stats.first.append(result[0])
                stats.total.append(result[1])

    began = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in workers))
    stats.elapsed = time.perf_counter() - began
    return stats


async def direct(target: str, concurrency: int, seconds: float) -> Stats:
    backend = GrpcChatBackend(target=target)
    request = ChatRequest(model="echo", messages=[ContextMessage(Role.USER, WORDS)])

    async def make(i: int) -> Stream:
        async def stream() -> tuple[float, float] | str:
            started = time.perf_counter()
            first = 0.0
            async for event in backend.stream(request):
                if not first and isinstance(event, Delta):
                    first = time.perf_counter() - started
            return first, time.perf_counter() - started

        return stream

    stats = await drive("model server (gRPC)", concurrency, seconds, make)
    await backend.close()
    return stats


class Sessions:
    """A fresh session every few turns, so histories stay short and comparable."""

    def __init__(self, http: RawHttp) -> None:
        self.http = http
        self.id = ""
        self.turns = TURNS_PER_SESSION

    async def current(self) -> str:
        if self.turns >= TURNS_PER_SESSION:
            status, body = await self.http.request("POST", "/api/v1/sessions", b"{}")
            assert status == 201, body
            self.id, self.turns = orjson.loads(body)["id"], 0
        self.turns += 1
        return self.id


async def sse(port: int, token: str, concurrency: int, seconds: float) -> Stats:
    body = orjson.dumps({"content": WORDS, "stream": True})

    async def make(i: int) -> Stream:
        http = RawHttp(port, token)
        sessions = Sessions(RawHttp(port, token))

        async def stream() -> tuple[float, float] | str:
            session_id = await sessions.current()
            started = time.perf_counter()
            await http.send("POST", f"/api/v1/sessions/{session_id}/messages", body)
            status, chunked, length = await http.read_head()
            if not chunked:
                assert http.reader is not None
                return str(orjson.loads(await http.reader.readexactly(length)).get("code", status))
            first, seen = 0.0, b""
            while chunk := await http.read_chunk():
                if not first and b"event: delta" in chunk:
                    first = time.perf_counter() - started
                seen = chunk
            if b"event: done" not in seen:
                return str(orjson.loads(seen.split(b"data: ", 1)[1])["code"])
            return first, time.perf_counter() - started

        return stream

    return await drive("gateway SSE", concurrency, seconds, make)


async def websocket(port: int, token: str, concurrency: int, seconds: float) -> Stats:
    async def make(i: int) -> Stream:
        sessions = Sessions(RawHttp(port, token))
        state: dict[str, object] = {"session": None, "ws": None}

        async def stream() -> tuple[float, float] | str:
            session_id = await sessions.current()
            if state["session"] != session_id:
                if state["ws"] is not None:
                    await state["ws"].close()  # type: ignore[attr-defined]
                state["ws"] = await connect(
                    f"ws://127.0.0.1:{port}/ws/v1/sessions/{session_id}",
                    subprotocols=["bearer", token],  # type: ignore[list-item]
                )
                state["session"] = session_id
            ws = state["ws"]
            started = time.perf_counter()
            await ws.send(orjson.dumps({"type": "message", "content": WORDS}).decode())  # type: ignore[attr-defined]
            first = 0.0
            while True:
                frame = orjson.loads(await ws.recv())  # type: ignore[attr-defined]
                if not first and frame["type"] == "delta":
                    first = time.perf_counter() - started
                if frame["type"] == "error":
                    return str(frame["code"])
                if frame["type"] == "done":
                    return first, time.perf_counter() - started

        return stream

    return await drive("gateway WebSocket", concurrency, seconds, make)


async def warm_up(port: int, token: str, count: int) -> None:
    """Open `count` streams, read their first delta, and leave (the model holds the rest)."""

    async def one() -> None:
        http = RawHttp(port, token)
        status, body = await http.request("POST", "/api/v1/sessions", b"{}")
        assert status == 201, body
        session_id = orjson.loads(body)["id"]
        await http.send("POST", f"/api/v1/sessions/{session_id}/messages", b'{"content": "warm up", "stream": true}')
        status, _, _ = await http.read_head()
        assert status == 200 and b"event: delta" in await http.read_chunk()
        http.close()

    await asyncio.gather(*(one() for _ in range(count)))


async def capacity(port: int, pid: int, token: str, count: int) -> None:
    """Open `count` SSE streams at once and measure the gateway's memory per stream."""
    await warm_up(port, token, 8)  # every code path, before the baseline
    await asyncio.sleep(0.5)
    baseline = rss_kib(pid)
    session_http = [RawHttp(port, token) for _ in range(32)]
    session_ids: list[str] = []

    async def create(http: RawHttp, n: int) -> None:
        for _ in range(n):
            status, body = await http.request("POST", "/api/v1/sessions", b"{}")
            assert status == 201, body
            session_ids.append(orjson.loads(body)["id"])

    await asyncio.gather(*(create(h, count // len(session_http) + 1) for h in session_http))
    for http in session_http:
        http.close()
    after_sessions = rss_kib(pid)
    streams: list[RawHttp] = []
    body = orjson.dumps({"content": "hold this stream", "stream": True})
    opened = 0
    failures: Counter[str] = Counter()

    async def open_one(session_id: str) -> None:
        nonlocal opened
        http = RawHttp(port, token)
        streams.append(http)
        try:
            await http.send("POST", f"/api/v1/sessions/{session_id}/messages", body)
            status, _, length = await http.read_head()
            if status == 200 and b"event: delta" in await http.read_chunk():
                opened += 1
            else:
                assert http.reader is not None
                failures[str(orjson.loads(await http.reader.readexactly(length)).get("code"))] += 1
        except OSError as exc:
            failures[type(exc).__name__] += 1

    started = time.perf_counter()
    for batch in range(0, count, 500):
        await asyncio.gather(*(open_one(s) for s in session_ids[batch : min(batch + 500, count)]))
    took = time.perf_counter() - started
    await asyncio.sleep(1.0)
    held = rss_kib(pid)
    per_stream = (held - after_sessions) / max(opened, 1)
    print(
        f"capacity: {opened} streams open at once (failed: {dict(failures) or 0}) in {took:.1f} s; gateway RSS "
        f"{baseline / 1024:.0f} MiB warm, {after_sessions / 1024:.0f} MiB after creating the sessions, "
        f"{held / 1024:.0f} MiB holding the streams: {per_stream:.1f} KiB per open stream"
    )
    for http in streams:
        http.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--open", type=int, default=5000, help="streams to hold open at once (0: skip)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    limit = raise_fd_limit()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"# stream overhead, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, 50-delta replies, "
        f"{args.seconds:.0f} s per run"
    )
    with stack(redis_url=args.redis_url) as run:
        port, _ = run.start_gateway()
        for c in levels:
            base = await direct(f"127.0.0.1:{run.backend_port}", c, args.seconds)
            print(base.line())
            for bench in (sse, websocket):
                stats = await bench(port, run.token, c, args.seconds)
                added = stats.first_p50 - base.first_p50
                print(stats.line() + f"   added to first delta p50 {added:5.2f} ms")
    if args.open:
        if args.open * 2 + 100 > limit:
            print(f"capacity: skipped, the file limit ({limit}) is below {args.open * 2 + 100}")
            return
        # A model that answers its first word at once, then pauses for a minute: streams stay open.
        # The streams must outlast the measurement: no silence deadline in the way.
        # (A turn's lock must outlast that deadline by half again: `manage.py check` insists.)
        held = {"SSE_HEARTBEAT_SECONDS": "30", "BACKEND_SILENCE_TIMEOUT_SECONDS": "300", "TURN_LOCK_SECONDS": "600"}
        with stack(redis_url=args.redis_url, token_delay=60, extra_env=held) as run:
            port, gateway = run.start_gateway()
            await capacity(port, gateway.pid, run.token, args.open)


if __name__ == "__main__":
    asyncio.run(main())
