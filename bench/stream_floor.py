"""The floor under a streamed turn: what grpc.aio itself costs per call and per streamed message.

Starts the echo model server alone and reads the same 50-delta reply the stream benchmarks
ask for, in this process, several ways, each at 1 and 16 concurrent streams:

- `bare grpc.aio`: the generated stub and `async for` over the call, nothing else: the floor
  a gateway's own gRPC client cannot go under;
- `aio read()`: the same call read with `await call.read()` (as the adapter reads it);
- `aio no retries`: `bare grpc.aio` on a channel without gRPC's retry support;
- `aio minimal`: the same on a channel with `grpc.minimal_stack` (no deadline or message-size
  filters: not one the gateway could use, it shows what the core's filters cost);
- `sync in thread`: the synchronous client's streaming call iterated in a thread per stream
  (one of a pool), the messages it has received handed to the loop in batches
  (`loop.call_soon_threadsafe` once per batch, not per message);
- `sync 1-thr in thr`: the same with `grpc.experimental.single_threaded_unary_stream` (the
  reading thread polls the call's queue itself, no channel spin thread in between);
- `grpclib`: the same call from grpclib, a gRPC client written on asyncio itself (HTTP/2 by
  the `h2` library, on the loop: no C-core, no thread handing messages to the loop), measured
  as the alternative to grpc.aio's per-message cost;
- `GrpcChatBackend`: the gateway's adapter (codec, client span, silence watchdog);
- `gateway backend`: the backend the gateway builds from settings (routing and the circuit
  breaker around the adapter);
- and, for a native turn's one call, `bare unary call` (grpc.aio's `Complete`) beside
  `grpclib unary call` (the same from grpclib).

`--loop uvloop` runs it all on uvloop, the loop the gateway runs on.

With `--open N`, it then holds N streams open at once (a model that pauses after its first
word) from the client `--open-way` names (`aio`, the default; `sync-thread`: a synchronous
call per thread, as above; `grpclib`: a grpclib call, with the task that reads it) and prints
this process's memory per open call (run it again with `--no-retries` for the same without
gRPC's retry support: memory is measured as growth of this process's RSS, so each variant
needs a process of its own).

It prints this process's CPU (user+system) per stream and per message, and the rate. The
client's CPU is the figure to compare with the gateway's CPU per stream (`gateway_cpu.py
--stream`): a gateway that relays a stream is at least such a client.

    python bench/stream_floor.py [--streams 2000] [--open 5000] [--no-retries] [--loop uvloop]
                                 [--open-way aio|sync-thread|grpclib]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from common import commit, raise_fd_limit, rss_kib, stack
from grpc import aio
from grpclib.client import Channel as GrpclibChannel
from grpclib.const import Cardinality
from stream_overhead import WORDS

from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Role
from llm_backend.resilience import grpc_routes
from proto.llm.v1 import chat_backend_pb2 as pb
from proto.llm.v1 import chat_backend_pb2_grpc as pb_grpc

MESSAGES_PER_STREAM = 51  # 50 deltas and the final message
STREAM_PATH = "/llm.v1.ChatBackendService/StreamComplete"
UNARY_PATH = "/llm.v1.ChatBackendService/Complete"
_END = object()


class ThreadedStream:
    """A synchronous streaming call iterated in a pool thread; what it has received reaches the
    loop in batches: one `call_soon_threadsafe` per batch, however many messages it holds."""

    def __init__(self, call: Iterator[Any], pool: ThreadPoolExecutor) -> None:
        self._loop = asyncio.get_running_loop()
        self._call = call
        self._items: deque[Any] = deque()
        self._scheduled = False
        self._waiter: asyncio.Future[None] | None = None
        pool.submit(self._pump)

    def _pump(self) -> None:  # in the pool thread
        try:
            for message in self._call:
                self._push(message)
        except grpc.RpcError as exc:
            self._push(exc)
        finally:
            self._push(_END)

    def _push(self, item: Any) -> None:
        self._items.append(item)
        if not self._scheduled:  # a wake-up already on its way takes this one too
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._scheduled = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[Any]:
        items = self._items
        while True:
            while items:
                item = items.popleft()
                if item is _END:
                    return
                if isinstance(item, grpc.RpcError):
                    raise item
                yield item
            self._waiter = self._loop.create_future()
            await self._waiter

    async def first(self) -> Any:
        async for item in self:
            return item
        return None


async def measure(label: str, concurrency: int, streams: int, one: Callable[[], AsyncIterator[object]]) -> None:
    per_worker = streams // concurrency
    counted = 0

    async def worker() -> None:
        nonlocal counted
        for _ in range(per_worker):
            async for _ in one():
                counted += 1

    cpu, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - began
    n = per_worker * concurrency
    print(
        f"{label:<18} c={concurrency:<3} n={n:<5} CPU {cpu / n * 1000:6.3f} ms/stream "
        f"{cpu / max(counted, 1) * 1e6:6.1f} us/message   {n / elapsed:6.0f} streams/s"
        f"   ({counted / n:.0f} messages each)",
        flush=True,
    )


async def hold_open(target: str, count: int, pb_request: pb.CompleteRequest, *, retries: bool) -> None:
    """Open `count` streams from a bare grpc.aio client, read each one's first message, and
    report this process's memory per open call: the floor of a gateway's memory per stream.
    `retries=False` takes gRPC's retry support out of the channel (the gateway keeps it on)."""
    channel = aio.insecure_channel(target, options=[] if retries else [("grpc.enable_retries", 0)])
    stub = pb_grpc.ChatBackendServiceStub(channel)
    calls = [stub.StreamComplete(pb_request, timeout=600) for _ in range(8)]
    await asyncio.gather(*(call.read() for call in calls))  # connected, every code path warm
    for call in calls:
        call.cancel()
    await asyncio.sleep(0.5)
    baseline = rss_kib(os.getpid())
    calls = []
    for batch in range(0, count, 500):
        opened = [stub.StreamComplete(pb_request, timeout=600) for _ in range(min(500, count - batch))]
        await asyncio.gather(*(call.read() for call in opened))
        calls.extend(opened)
    await asyncio.sleep(1.0)
    held = rss_kib(os.getpid())
    _print_held(f"bare grpc.aio{'' if retries else ' (retries off)'}", len(calls), baseline, held)
    for call in calls:
        call.cancel()
    await channel.close()


async def hold_open_threaded(target: str, count: int, pb_request: pb.CompleteRequest, *, retries: bool) -> None:
    """`hold_open` for the synchronous client, a pool thread per open call (`ThreadedStream`)."""
    threading.stack_size(256 * 1024)
    options = [("grpc.experimental.single_threaded_unary_stream", 1)]
    channel = grpc.insecure_channel(target, options=options if retries else [*options, ("grpc.enable_retries", 0)])
    stub = pb_grpc.ChatBackendServiceStub(channel)
    with ThreadPoolExecutor(max_workers=count + 8) as pool:
        warm = [stub.StreamComplete(pb_request, timeout=600) for _ in range(8)]
        await asyncio.gather(*(ThreadedStream(call, pool).first() for call in warm))
        for call in warm:
            call.cancel()
        await asyncio.sleep(0.5)
        baseline = rss_kib(os.getpid())
        calls = []
        for batch in range(0, count, 500):
            opened = [stub.StreamComplete(pb_request, timeout=600) for _ in range(min(500, count - batch))]
            await asyncio.gather(*(ThreadedStream(call, pool).first() for call in opened))
            calls.extend(opened)
        await asyncio.sleep(1.0)
        held = rss_kib(os.getpid())
        _print_held(f"sync in thread{'' if retries else ' (retries off)'}", len(calls), baseline, held)
        for call in calls:
            call.cancel()
    channel.close()


async def hold_open_grpclib(target: str, count: int, pb_request: pb.CompleteRequest, *, retries: bool) -> None:
    """`hold_open` for grpclib: each call read by a task of its own (as a gateway stream would
    be), its first message read, then held. grpclib has no retry support to turn off."""
    host, port = target.rsplit(":", 1)
    channel = GrpclibChannel(host, int(port))

    async def held(opened: asyncio.Semaphore, release: asyncio.Event) -> None:
        async with channel.request(
            STREAM_PATH, Cardinality.UNARY_STREAM, pb.CompleteRequest, pb.StreamCompleteResponse, timeout=600
        ) as stream:
            await stream.send_message(pb_request, end=True)
            await stream.recv_message()
            opened.release()
            await release.wait()
            await stream.cancel()

    async def hold(n: int, opened: asyncio.Semaphore, release: asyncio.Event) -> list[asyncio.Task[None]]:
        tasks = []
        for batch in range(0, n, 500):
            new = [asyncio.create_task(held(opened, release)) for _ in range(min(500, n - batch))]
            for _ in new:
                await opened.acquire()
            tasks.extend(new)
        return tasks

    warm_release = asyncio.Event()
    warm = await hold(8, asyncio.Semaphore(0), warm_release)  # connected, every code path warm
    warm_release.set()
    await asyncio.gather(*warm)
    await asyncio.sleep(0.5)
    baseline = rss_kib(os.getpid())
    release = asyncio.Event()
    tasks = await hold(count, asyncio.Semaphore(0), release)
    await asyncio.sleep(1.0)
    _print_held("grpclib (with its task)", len(tasks), baseline, rss_kib(os.getpid()))
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    channel.close()


def _print_held(label: str, count: int, baseline: int, held: int) -> None:
    print(
        f"{label}: {count} streams open at once, RSS {baseline / 1024:.0f} MiB before, "
        f"{held / 1024:.0f} MiB holding them: {(held - baseline) / count:.1f} KiB per open call",
        flush=True,
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000, help="streams per cell (0: none)")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--open", type=int, default=5000, help="streams held open at once (0: skip)")
    parser.add_argument(
        "--no-retries", action="store_true", help="hold the streams on a channel without gRPC's retry support"
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--open-way", choices=["aio", "sync-thread", "grpclib"], default="aio")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    with stack(redis_url=args.redis_url) as run:
        target = f"127.0.0.1:{run.backend_port}"
        channel = aio.insecure_channel(target)
        stub = pb_grpc.ChatBackendServiceStub(channel)
        pb_request = pb.CompleteRequest(
            model="echo", messages=[pb.Message(role=pb.ROLE_USER, content=WORDS)], params=pb.GenerationParams()
        )
        request = ChatRequest(model="echo", messages=[ContextMessage(Role.USER, WORDS)])
        adapter = GrpcChatBackend(target=target)
        routed = grpc_routes({"*": [target]})

        def bare() -> AsyncIterator[object]:
            return stub.StreamComplete(pb_request, timeout=60)  # type: ignore[no-any-return]

        async def read_loop() -> AsyncIterator[object]:
            call = stub.StreamComplete(pb_request, timeout=60)
            while (message := await call.read()) is not aio.EOF:  # type: ignore[attr-defined]
                yield message

        no_retries = pb_grpc.ChatBackendServiceStub(aio.insecure_channel(target, options=[("grpc.enable_retries", 0)]))
        minimal = pb_grpc.ChatBackendServiceStub(
            aio.insecure_channel(target, options=[("grpc.enable_retries", 0), ("grpc.minimal_stack", 1)])
        )
        sync_channel = grpc.insecure_channel(target)
        single_channel = grpc.insecure_channel(target, options=[("grpc.experimental.single_threaded_unary_stream", 1)])
        sync_stub, single_stub = (
            pb_grpc.ChatBackendServiceStub(sync_channel),
            pb_grpc.ChatBackendServiceStub(single_channel),
        )
        pool = ThreadPoolExecutor(max_workers=32)

        async def unary_once() -> AsyncIterator[object]:
            yield await stub.Complete(pb_request, timeout=60)

        host, port = target.rsplit(":", 1)
        grpclib_channel = GrpclibChannel(host, int(port))

        async def grpclib_stream() -> AsyncIterator[object]:
            async with grpclib_channel.request(
                STREAM_PATH, Cardinality.UNARY_STREAM, pb.CompleteRequest, pb.StreamCompleteResponse, timeout=60
            ) as stream:
                await stream.send_message(pb_request, end=True)
                async for message in stream:
                    yield message

        async def grpclib_unary() -> AsyncIterator[object]:
            async with grpclib_channel.request(
                UNARY_PATH, Cardinality.UNARY_UNARY, pb.CompleteRequest, pb.CompleteResponse, timeout=60
            ) as stream:
                await stream.send_message(pb_request, end=True)
                yield await stream.recv_message()

        ways: list[tuple[str, Callable[[], AsyncIterator[object]]]] = [
            ("bare grpc.aio", bare),
            ("aio read()", read_loop),
            ("aio no retries", lambda: no_retries.StreamComplete(pb_request, timeout=60)),
            ("aio minimal", lambda: minimal.StreamComplete(pb_request, timeout=60)),
            ("sync in thread", lambda: aiter(ThreadedStream(sync_stub.StreamComplete(pb_request, timeout=60), pool))),
            (
                "sync 1-thr in thr",
                lambda: aiter(ThreadedStream(single_stub.StreamComplete(pb_request, timeout=60), pool)),
            ),
            ("grpclib", grpclib_stream),
            ("GrpcChatBackend", lambda: adapter.stream(request)),
            ("gateway backend", lambda: routed.stream(request)),
        ]
        await measure("warm-up", 4, 200, bare)
        print(f"# gRPC floor per 50-delta stream, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        for c in [int(c) for c in args.concurrency.split(",")] if args.streams else []:
            for label, one in ways:
                await measure(label, c, args.streams, one)
            await measure("bare unary call", c, args.streams, unary_once)
            await measure("grpclib unary call", c, args.streams, grpclib_unary)
        grpclib_channel.close()
        await adapter.close()
        await routed.close()
        await channel.close()
        pool.shutdown()
        sync_channel.close()
        single_channel.close()
    if args.open:
        raise_fd_limit()
        hold = {"sync-thread": hold_open_threaded, "grpclib": hold_open_grpclib}.get(args.open_way, hold_open)
        # A model that answers its first word at once, then pauses for a minute: streams stay open.
        with stack(redis_url=args.redis_url, token_delay=60) as run:
            await hold(f"127.0.0.1:{run.backend_port}", args.open, pb_request, retries=not args.no_retries)


if __name__ == "__main__":
    options = arguments()
    if options.loop == "uvloop":
        import uvloop

        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
