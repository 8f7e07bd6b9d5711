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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from common import RawHttp, percentile, stack

from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Role

TURNS_PER_SESSION = 10  # keeps the history, and so the context sent, comparable on both paths
SYSTEM_PROMPT = "You are a concise assistant."
QUESTION = "What is the capital of France? Answer in one short sentence."
Turn = Callable[[], Awaitable[bool]]


@dataclass
class Stats:
    label: str
    concurrency: int
    latencies: list[float]
    elapsed: float
    errors: int

    def line(self) -> str:
        return (
            f"{self.label:<22} c={self.concurrency:<3} {self.rate:8.0f} turns/s   p50 {self.p50:7.2f} ms"
            f"   p99 {percentile(self.latencies, 0.99) * 1000:7.2f} ms   errors {self.errors}"
        )

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5) * 1000


async def drive(
    concurrency: int, seconds: float, make_worker: Callable[[int], Awaitable[Turn]]
) -> tuple[list[float], int, float]:
    workers = [await make_worker(i) for i in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def loop(turn: Turn) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if await turn():
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

    async def make_worker(i: int) -> Turn:
        count = 0

        async def turn() -> bool:
            nonlocal count
            count += 1
            await backend.complete(ChatRequest(model="echo", messages=history_context(count % TURNS_PER_SESSION)))
            return True

        return turn

    latencies, errors, elapsed = await drive(concurrency, seconds, make_worker)
    await backend.close()
    return Stats("model server (gRPC)", concurrency, latencies, elapsed, errors)


async def bench_gateway(label: str, port: int, token: str, concurrency: int, seconds: float) -> Stats:
    connections: list[RawHttp] = []
    body = orjson.dumps({"content": QUESTION})
    creating = [0.0]  # time spent creating sessions inside the timed window

    async def make_worker(i: int) -> Turn:
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
            if int(state["count"]) >= TURNS_PER_SESSION:
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per run")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--servers", default="uvicorn", help="comma-separated: uvicorn,daphne")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with stack(redis_url=args.redis_url) as run:
        print(f"# turn overhead, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.seconds:.0f} s per run")
        direct = {c: await bench_direct(f"127.0.0.1:{run.backend_port}", c, args.seconds) for c in levels}
        for stats in direct.values():
            print(stats.line())
        for server in args.servers.split(","):
            port, gateway = run.start_gateway(server)
            await bench_gateway(server, port, run.token, 4, 1.0)  # warm-up
            for c in levels:
                stats = await bench_gateway(f"gateway ({server})", port, run.token, c, args.seconds)
                print(stats.line() + f"   added p50 {stats.p50 - direct[c].p50:6.2f} ms")
            gateway.terminate()
            gateway.wait()


if __name__ == "__main__":
    asyncio.run(main())
