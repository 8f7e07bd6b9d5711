"""What the gateway adds to a non-streaming turn: the same turns through the gateway and
straight to the model server, at 1, 16 and 64 concurrent clients.

Starts the echo model server and the gateway (uvicorn, and daphne with --servers) as
subprocesses on this machine, with the real Redis as the active store, and prints
turns per second, p50 and p99 latency for each path and the gateway's added latency.
The load generator is a minimal HTTP/1.1 client so that its own cost stays small;
everything (client, gateway, model server, Redis) shares this machine's cores.

    python bench/turn_overhead.py [--seconds 5] [--concurrency 1,16,64] [--servers uvicorn,daphne]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

import django  # noqa: E402

django.setup()

from core.auth import devkeys  # noqa: E402
from llm_backend.grpc_client import GrpcChatBackend  # noqa: E402
from llm_backend.ports import ChatRequest, ContextMessage, Role  # noqa: E402
from tests.support import free_port, wait_for_port  # noqa: E402

TURNS_PER_SESSION = 10  # keeps the history, and so the context sent, comparable on both paths
SYSTEM_PROMPT = "You are a concise assistant."
QUESTION = "What is the capital of France? Answer in one short sentence."


@dataclass
class Stats:
    label: str
    concurrency: int
    latencies: list[float]
    elapsed: float
    errors: int

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.label:<22} c={self.concurrency:<3} {self.rate:8.0f} turns/s   p50 {self.pct(0.5):7.2f} ms"
            f"   p99 {self.pct(0.99):7.2f} ms   errors {self.errors}"
        )


class RawHttp:
    """One keep-alive HTTP/1.1 connection; just enough protocol for this benchmark."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.auth = f"Bearer {token}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + b"Authorization: " + self.auth + b"\r\n\r\n" + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        data = b""
        while (size := int((await self.reader.readline()).strip(), 16)) > 0:
            data += await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(
    concurrency: int, seconds: float, make_worker: Callable[[int], Awaitable[Callable[[], Awaitable[bool]]]]
) -> tuple[list[float], int, float]:
    workers = [await make_worker(i) for i in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop(turn: Callable[[], Awaitable[bool]]) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await turn()
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in workers))
    return latencies, errors, time.perf_counter() - began


def history_context(turns: int) -> list[ContextMessage]:
    context = [ContextMessage(Role.SYSTEM, SYSTEM_PROMPT)]
    for _ in range(turns):
        context += [ContextMessage(Role.USER, QUESTION), ContextMessage(Role.ASSISTANT, f"Echo: {QUESTION}")]
    return [*context, ContextMessage(Role.USER, QUESTION)]


async def bench_direct(target: str, concurrency: int, seconds: float) -> Stats:
    backend = GrpcChatBackend(target=target, timeout=30)

    async def make_worker(i: int) -> Callable[[], Awaitable[bool]]:
        count = 0

        async def turn() -> bool:
            nonlocal count
            count += 1
            request = ChatRequest(model="echo", messages=history_context(count % TURNS_PER_SESSION), request_id="b")
            await backend.complete(request)
            return True

        return turn

    latencies, errors, elapsed = await drive(concurrency, seconds, make_worker)
    await backend.close()
    return Stats("model server (gRPC)", concurrency, latencies, elapsed, errors)


async def bench_gateway(label: str, port: int, token: str, concurrency: int, seconds: float) -> Stats:
    connections: list[RawHttp] = []
    body = orjson.dumps({"content": QUESTION})
    creating = [0.0]  # time spent creating sessions inside the timed window

    async def make_worker(i: int) -> Callable[[], Awaitable[bool]]:
        http = RawHttp(port, token)
        connections.append(http)
        state = {"session": "", "count": 0}

        async def new_session() -> None:
            status, data = await http.request(
                "POST", "/api/v1/sessions", orjson.dumps({"system_prompt": SYSTEM_PROMPT})
            )
            assert status == 201, data
            state["session"], state["count"] = orjson.loads(data)["id"], 0

        await new_session()

        async def turn() -> bool:
            if state["count"] >= TURNS_PER_SESSION:
                started = time.perf_counter()
                await new_session()  # not a turn: keep it out of the turn's time
                creating[0] += time.perf_counter() - started
            state["count"] = int(state["count"]) + 1
            status, _ = await http.request("POST", f"/api/v1/sessions/{state['session']}/messages", body)
            return status == 200

        return turn

    latencies, errors, elapsed = await drive(concurrency, seconds, make_worker)
    for http in connections:
        http.close()
    # Session creation happened inside the timed window; take its time out of the rate.
    return Stats(label, concurrency, latencies, max(elapsed - creating[0] / concurrency, 1e-9), errors)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def gateway_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", "config.asgi:application"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per run")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--servers", default="uvicorn", help="comma-separated: uvicorn,daphne")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    workdir = ROOT / "var" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"gwbench:{uuid.uuid4().hex[:8]}"
    backend_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "REDIS_URL": args.redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "BACKEND_TARGET": f"127.0.0.1:{backend_port}",
        "DEV_SIGNING_KEY_PATH": str(workdir / "key.pem"),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "LOG_LEVEL": "WARNING",
        "SESSION_MAX_PER_OWNER": "1000000",
    }
    key = devkeys.load_or_create_key(workdir / "key.pem")
    token = devkeys.mint(
        key,
        issuer="urn:llm-gateway:dev",
        audience="llm-gateway",
        subject="bench",
        scopes="chat.read chat.write",
        ttl=3600,
    )
    model = start([sys.executable, "manage.py", "serve_backend", "--bind", f"127.0.0.1:{backend_port}"], env)
    children = [model]
    try:
        wait_for_port(backend_port, proc=model)
        print(f"# turn overhead, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.seconds:.0f} s per run")
        direct = {c: await bench_direct(f"127.0.0.1:{backend_port}", c, args.seconds) for c in levels}
        for stats in direct.values():
            print(stats.line())
        for server in args.servers.split(","):
            port = free_port()
            gateway = start(gateway_command(server, port), env)
            children.append(gateway)
            wait_for_port(port, proc=gateway)
            await bench_gateway(server, port, token, 4, 1.0)  # warm-up
            for c in levels:
                stats = await bench_gateway(f"gateway ({server})", port, token, c, args.seconds)
                print(stats.line() + f"   added p50 {stats.pct(0.5) - direct[c].pct(0.5):6.2f} ms")
            gateway.terminate()
            gateway.wait()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait()
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start_index in range(0, len(keys), 1000):
            client.delete(*keys[start_index : start_index + 1000])


if __name__ == "__main__":
    asyncio.run(main())
