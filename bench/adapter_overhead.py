"""What the reference model server's OpenAI-compatible adapter costs per call over its upstream.

Starts the peer harness's fake OpenAI upstream (`../shared/bench/mock_upstream.py`, or --mock),
the model server bridging to it (`serve_backend --adapter openai`) and the echo model server
(the same gRPC round trip with no upstream), and sends the same calls, non-streamed (20 tokens)
and streamed (50 chunks), straight at the mock over HTTP, through the bridge over gRPC, and to
the echo server. Prints calls/s and p50 (first chunk for streams) of each, the p50 the bridge
adds over the mock, and the model servers' CPU per call: the bridge's CPU less the echo
server's is what the adapter itself spends on a call (its HTTP client, JSON and events).

    python bench/adapter_overhead.py [--seconds 3] [--concurrency 1,16] [--mock PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from common import ROOT, RawHttp, Stack, cpu_seconds, percentile, spawn_model_server, stack
from stream_overhead import WORDS
from stream_overhead import Stats as StreamStats
from stream_overhead import drive as drive_streams
from turn_overhead import drive as drive_calls

from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Delta, GenerationParams, Role
from tests.support import free_port, wait_for_port

CALL_TOKENS, STREAM_TOKENS = 20, 50
MESSAGES = [ContextMessage(Role.SYSTEM, "You are a concise assistant."), ContextMessage(Role.USER, WORDS)]


def find_mock(given: str | None) -> Path:
    candidates = [Path(given)] if given else [p / "shared/bench/mock_upstream.py" for p in ROOT.parents[:2]]
    for path in candidates:
        if path.is_file():
            return path
    sys.exit(f"no mock upstream at {', '.join(map(str, candidates))}: pass --mock PATH")


def request(tokens: int) -> ChatRequest:
    return ChatRequest(model="mock-gpt", messages=MESSAGES, params=GenerationParams(max_tokens=tokens))


def upstream_body(tokens: int, *, stream: bool) -> bytes:
    """The body the adapter sends for `request(tokens)`, so both paths ask the mock the same thing."""
    body: dict[str, object] = {
        "model": "mock-gpt",
        "messages": [{"role": m.role.value, "content": m.content} for m in MESSAGES],
        "store": False,
        "stream": stream,
        "max_tokens": tokens,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


class Row:
    def __init__(self, label: str, c: int, rate: float, p50: float, cpu_ms: float | None) -> None:
        self.label, self.c, self.rate, self.p50, self.cpu_ms = label, c, rate, p50, cpu_ms

    def line(self, base: Row | None = None) -> str:
        text = f"{self.label:<34} c={self.c:<3} {self.rate:7.0f}/s   p50 {self.p50:6.2f} ms"
        if self.cpu_ms is not None:
            text += f"   server CPU {self.cpu_ms:5.3f} ms/call"
        if base is not None:
            text += f"   added p50 {self.p50 - base.p50:5.2f} ms"
        return text


async def measure_calls(
    label: str, c: int, seconds: float, pid: int | None, make: Callable[[], Callable[[], Awaitable[bool]]]
) -> Row:
    async def make_worker(i: int) -> Callable[[], Awaitable[bool]]:
        return make()

    cpu = cpu_seconds(pid) if pid else 0.0
    latencies, errors, elapsed = await drive_calls(c, seconds, make_worker)
    assert not errors, f"{label}: {errors} errors"
    cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / len(latencies) if pid else None
    return Row(label, c, len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, cpu_ms)


async def measure_streams(label: str, c: int, seconds: float, pid: int | None, make: Callable[[], object]) -> Row:
    async def make_worker(i: int) -> object:
        return make()

    cpu = cpu_seconds(pid) if pid else 0.0
    stats: StreamStats = await drive_streams(label, c, seconds, make_worker)  # type: ignore[arg-type]
    assert not stats.errors, f"{label}: {stats.errors}"
    cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / len(stats.total) if pid else None
    return Row(label, c, stats.rate, stats.first_p50, cpu_ms)


def http_call(port: int) -> Callable[[], Awaitable[bool]]:
    http = RawHttp(port, "mock")
    body = upstream_body(CALL_TOKENS, stream=False)

    async def call() -> bool:
        status, _ = await http.request("POST", "/v1/chat/completions", body)
        return status == 200

    return call


def http_stream(port: int) -> Callable[[], Awaitable[tuple[float, float]]]:
    http = RawHttp(port, "mock")
    body = upstream_body(STREAM_TOKENS, stream=True)

    async def stream() -> tuple[float, float]:
        started = time.perf_counter()
        await http.send("POST", "/v1/chat/completions", body)
        status, chunked, _ = await http.read_head()
        assert status == 200 and chunked
        first = 0.0
        while chunk := await http.read_chunk():
            if not first and b'"content"' in chunk:
                first = time.perf_counter() - started
        return first, time.perf_counter() - started

    return stream


def grpc_call(backend: GrpcChatBackend) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        await backend.complete(request(CALL_TOKENS))
        return True

    return call


def grpc_stream(backend: GrpcChatBackend) -> Callable[[], Awaitable[tuple[float, float]]]:
    async def stream() -> tuple[float, float]:
        started = time.perf_counter()
        first = 0.0
        async for event in backend.stream(request(STREAM_TOKENS)):
            if not first and isinstance(event, Delta):
                first = time.perf_counter() - started
        return first, time.perf_counter() - started

    return stream


@contextmanager
def mock_upstream(path: Path) -> Iterator[int]:
    """The fake OpenAI upstream on a free loopback port."""
    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, str(path), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc=mock)
        yield port
    finally:
        mock.terminate()
        mock.wait()


def report(mock_row: Row, echo_row: Row, bridge_row: Row, unit: str) -> None:
    print(mock_row.line())
    print(echo_row.line())
    print(bridge_row.line(mock_row))
    assert bridge_row.cpu_ms is not None and echo_row.cpu_ms is not None
    spent = bridge_row.cpu_ms - echo_row.cpu_ms
    print(f"{'':34} the adapter's CPU per {unit} (the bridge's less the echo server's): {spent:5.3f} ms")


async def measure(levels: list[int], seconds: float, mock_port: int, run: Stack) -> None:
    bridge_pid = run.children[0].pid
    echo_port = free_port()
    echo = spawn_model_server(run.env, echo_port, adapter="echo")
    run.children.append(echo)
    wait_for_port(echo_port, proc=echo)
    bridge = GrpcChatBackend(target=f"127.0.0.1:{run.backend_port}", timeout=30)
    echo_backend = GrpcChatBackend(target=f"127.0.0.1:{echo_port}", timeout=30)
    await measure_calls("warm-up", 4, 0.5, None, lambda: grpc_call(bridge))
    print(
        f"# adapter overhead, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores, {seconds:.0f} s "
        f"per cell; calls of {CALL_TOKENS} tokens, streams of {STREAM_TOKENS} chunks"
    )
    for c in levels:
        report(
            await measure_calls("mock alone (HTTP)", c, seconds, None, lambda: http_call(mock_port)),
            await measure_calls("echo model server (gRPC)", c, seconds, echo.pid, lambda: grpc_call(echo_backend)),
            await measure_calls("model server -> mock (gRPC)", c, seconds, bridge_pid, lambda: grpc_call(bridge)),
            "call",
        )
    for c in levels:
        report(
            await measure_streams("mock alone, stream (HTTP)", c, seconds, None, lambda: http_stream(mock_port)),
            await measure_streams("echo model server, stream", c, seconds, echo.pid, lambda: grpc_stream(echo_backend)),
            await measure_streams("model server -> mock, stream", c, seconds, bridge_pid, lambda: grpc_stream(bridge)),
            "stream",
        )
    await bridge.close()
    await echo_backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--mock", default=None, help="path of the peer harness's mock_upstream.py")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with mock_upstream(find_mock(args.mock)) as mock_port:
        bridge_env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1", "OPENAI_MODEL": "", "OPENAI_API_KEY": ""}
        with stack(redis_url=args.redis_url, adapter="openai", extra_env=bridge_env) as run:
            asyncio.run(measure(levels, args.seconds, mock_port, run))


if __name__ == "__main__":
    main()
