"""The floor under a streamed turn: what grpc.aio itself costs per call and per streamed message.

Starts the echo model server alone and reads the same 50-delta reply the stream benchmarks
ask for, in this process, three ways, each at 1 and 16 concurrent streams:

- `bare grpc.aio`: the generated stub and `async for` over the call, nothing else: the floor
  a gateway's own gRPC client cannot go under;
- `GrpcChatBackend`: the gateway's adapter (codec, client span, silence watchdog);
- `gateway backend`: the backend the gateway builds from settings (routing and the circuit
  breaker around the adapter).

With `--open N`, it then holds N streams open at once from a bare grpc.aio client (a model
that pauses after its first word) and prints this process's memory per open call (run it
again with `--no-retries` for the same without gRPC's retry support: memory is measured as
growth of this process's RSS, so each variant needs a process of its own).

It prints this process's CPU (user+system) per stream and per message, and the rate. The
client's CPU is the figure to compare with the gateway's CPU per stream (`gateway_cpu.py
--stream`): a gateway that relays a stream is at least such a client.

    python bench/stream_floor.py [--streams 2000] [--open 5000] [--no-retries]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

from common import commit, raise_fd_limit, rss_kib, stack
from grpc import aio
from stream_overhead import WORDS

from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Role
from llm_backend.resilience import grpc_routes
from proto.llm.v1 import chat_backend_pb2 as pb
from proto.llm.v1 import chat_backend_pb2_grpc as pb_grpc

MESSAGES_PER_STREAM = 51  # 50 deltas and the final message


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
    print(
        f"bare grpc.aio{'' if retries else ' (retries off)'}: {len(calls)} streams open at once, "
        f"RSS {baseline / 1024:.0f} MiB before, "
        f"{held / 1024:.0f} MiB holding them: {(held - baseline) / len(calls):.1f} KiB per open call"
    )
    for call in calls:
        call.cancel()
    await channel.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000, help="streams per cell (0: none)")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--open", type=int, default=5000, help="streams held open at once (0: skip)")
    parser.add_argument(
        "--no-retries", action="store_true", help="hold the streams on a channel without gRPC's retry support"
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
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

        async def unary_once() -> AsyncIterator[object]:
            yield await stub.Complete(pb_request, timeout=60)

        ways: list[tuple[str, Callable[[], AsyncIterator[object]]]] = [
            ("bare grpc.aio", bare),
            ("GrpcChatBackend", lambda: adapter.stream(request)),
            ("gateway backend", lambda: routed.stream(request)),
        ]
        await measure("warm-up", 4, 200, bare)
        print(f"# gRPC floor per 50-delta stream, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        for c in [int(c) for c in args.concurrency.split(",")] if args.streams else []:
            for label, one in ways:
                await measure(label, c, args.streams, one)
            await measure("bare unary call", c, args.streams, unary_once)
        await adapter.close()
        await routed.close()
        await channel.close()
    if args.open:
        raise_fd_limit()
        # A model that answers its first word at once, then pauses for a minute: streams stay open.
        with stack(redis_url=args.redis_url, token_delay=60) as run:
            await hold_open(f"127.0.0.1:{run.backend_port}", args.open, pb_request, retries=not args.no_retries)


if __name__ == "__main__":
    asyncio.run(main())
