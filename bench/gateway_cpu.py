"""The gateway's own CPU per request: a fixed number of non-streamed turns (at 1 and 16 clients)
and of session creations (at 16 clients), with the gateway process's user+system CPU over each.

CPU per request is the figure that holds on a shared machine whose wall-clock speed swings:
the same work costs the same CPU however busy the other cores are. Wall-clock p50 and rates are
printed too. Sessions for the turns are created before each turn run starts (ten turns each, as
`turn_overhead.py` does), so creation's CPU is not counted in a turn's.

    python bench/gateway_cpu.py [--turns 2000] [--creates 2000] [--concurrency 1,16]
                                [--database postgres://postgres@127.0.0.1:5432/gateway_bench]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import orjson
from common import RawHttp, cpu_seconds, percentile, stack

TURNS_PER_SESSION = 10
SYSTEM_PROMPT = "You are a concise assistant."
QUESTION = "What is the capital of France? Answer in one short sentence."


async def create(http: RawHttp) -> str:
    status, data = await http.request("POST", "/api/v1/sessions", orjson.dumps({"system_prompt": SYSTEM_PROMPT}))
    assert status == 201, data
    return str(orjson.loads(data)["id"])


async def run_turns(port: int, token: str, pid: int, concurrency: int, turns: int) -> str:
    per_worker = turns // concurrency
    creator = RawHttp(port, token)  # the workers connect when they start: idle, uvicorn would close them
    sessions = [[await create(creator) for _ in range(-(-per_worker // TURNS_PER_SESSION))] for _ in range(concurrency)]
    creator.close()
    connections = [RawHttp(port, token) for _ in range(concurrency)]
    body = orjson.dumps({"content": QUESTION})
    latencies: list[float] = []

    async def worker(http: RawHttp, mine: list[str]) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            status, data = await http.request("POST", f"/api/v1/sessions/{mine[i // TURNS_PER_SESSION]}/messages", body)
            assert status == 200, data
            latencies.append(time.perf_counter() - started)

    cpu_before, began = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker(http, mine) for http, mine in zip(connections, sessions, strict=True)))
    elapsed, cpu = time.perf_counter() - began, cpu_seconds(pid) - cpu_before
    for http in connections:
        http.close()
    n = len(latencies)
    return (
        f"turns     c={concurrency:<3} n={n:<6} CPU {cpu / n * 1000:6.2f} ms/turn   {n / elapsed:7.0f} turns/s"
        f"   p50 {percentile(latencies, 0.5) * 1000:6.2f} ms   p99 {percentile(latencies, 0.99) * 1000:7.2f} ms"
    )


async def run_creates(port: int, token: str, pid: int, concurrency: int, creates: int) -> str:
    connections = [RawHttp(port, token) for _ in range(concurrency)]
    for http in connections:
        await http.connect()
    latencies: list[float] = []

    async def worker(http: RawHttp) -> None:
        for _ in range(creates // concurrency):
            started = time.perf_counter()
            await create(http)
            latencies.append(time.perf_counter() - started)

    cpu_before, began = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker(http) for http in connections))
    elapsed, cpu = time.perf_counter() - began, cpu_seconds(pid) - cpu_before
    for http in connections:
        http.close()
    n = len(latencies)
    return (
        f"creations c={concurrency:<3} n={n:<6} CPU {cpu / n * 1000:6.2f} ms/each   {n / elapsed:7.0f} req/s  "
        f"   p50 {percentile(latencies, 0.5) * 1000:6.2f} ms   p99 {percentile(latencies, 0.99) * 1000:7.2f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=2000, help="turns per concurrency level")
    parser.add_argument("--creates", type=int, default=2000, help="session creations (0: none)")
    parser.add_argument("--concurrency", default="1,16", help="for the turns; creations run at 16")
    parser.add_argument("--database", default="", help="DATABASE_URL for the gateway (default: SQLite)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    extra = {"DATABASE_URL": args.database} if args.database else {}
    with stack(redis_url=args.redis_url, extra_env=extra) as run:
        port, gateway = run.start_gateway("uvicorn")
        await run_turns(port, run.token, gateway.pid, 4, 400)  # warm-up
        database = args.database or "sqlite"
        print(f"# gateway CPU, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, {database}")
        for c in [int(c) for c in args.concurrency.split(",")]:
            print(await run_turns(port, run.token, gateway.pid, c, args.turns), flush=True)
        if args.creates:
            print(await run_creates(port, run.token, gateway.pid, 16, args.creates), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
