"""The gateway's own CPU per request, and the Redis commands per turn: figures that hold on a shared machine.

Wall-clock rates here move 2x with whatever else the machine runs; the CPU the gateway process
(uvicorn) spends on a fixed number of requests moves far less. Starts the echo model server and
one gateway against the real Redis, then:

- runs `--turns` native turns (with `--stream`, 50-delta SSE streams) at each `--concurrency`,
  on sessions created before the run starts (ten turns each, as `turn_overhead.py` does, so
  creation's CPU is not counted in a turn's), and prints the gateway's user+system CPU per turn
  with the rate, p50 and p99;
- creates `--creates` sessions at 16 clients and prints the same per creation;
- with `--reads N`, N session lists (`GET /api/v1/sessions`) and N session reads
  (`GET /api/v1/sessions/{id}`) at 16 clients, and the same per request;
- with `--monitor N`, runs N more turns at one client under Redis MONITOR and prints the commands
  the run's keys saw per turn, by name, those the gateway sent apart from those its Lua scripts
  ran (MONITOR slows Redis: no timing is taken then).

`--database` runs the gateway on that DATABASE_URL (PostgreSQL) instead of SQLite.

    python bench/gateway_cpu.py [--turns 2000] [--concurrency 1,16] [--stream] [--creates 2000]
                                [--monitor 200] [--database postgres://postgres@127.0.0.1:5432/gateway_bench]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import orjson
import redis
from common import RawHttp, commit, cpu_seconds, percentile, stack
from stream_overhead import WORDS
from turn_overhead import QUESTION, SYSTEM_PROMPT, TURNS_PER_SESSION

CREATE_CONCURRENCY = 16


async def create(http: RawHttp) -> str:
    status, data = await http.request("POST", "/api/v1/sessions", orjson.dumps({"system_prompt": SYSTEM_PROMPT}))
    assert status == 201, data
    return str(orjson.loads(data)["id"])


class Timed:
    """The gateway's CPU and the wall clock over a run of requests, with each request's latency."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.latencies: list[float] = []
        self.failed = 0
        self.cpu = self.elapsed = 0.0

    async def run(self, *workers: Awaitable[None]) -> None:
        cpu_before, began = cpu_seconds(self.pid), time.perf_counter()
        await asyncio.gather(*workers)
        self.elapsed, self.cpu = time.perf_counter() - began, cpu_seconds(self.pid) - cpu_before

    def line(self, label: str, concurrency: int, unit: str) -> str:
        n = max(len(self.latencies), 1)
        return (
            f"{label:<9} c={concurrency:<3} n={len(self.latencies):<6} CPU {self.cpu / n * 1000:6.2f} ms/{unit:<6}"
            f"{n / self.elapsed:7.0f}/s   p50 {percentile(self.latencies, 0.5) * 1000:6.2f} ms"
            f"   p99 {percentile(self.latencies, 0.99) * 1000:7.2f} ms"
            + (f"   {self.failed} failed" if self.failed else "")
        )


async def make_sessions(port: int, token: str, concurrency: int, turns: int) -> list[list[str]]:
    """Each client's sessions for its share of `turns`, ten turns a session."""
    per_worker = -(-turns // concurrency)
    creator = RawHttp(port, token)  # the workers connect when they start: idle, uvicorn would close them
    sessions = [[await create(creator) for _ in range(-(-per_worker // TURNS_PER_SESSION))] for _ in range(concurrency)]
    creator.close()
    return sessions


async def run_turns(port: int, token: str, pid: int, sessions: list[list[str]], turns: int, *, stream: bool) -> Timed:
    """`turns` turns (or streams) over one connection per client of `sessions`."""
    per_worker = -(-turns // len(sessions))
    connections = [RawHttp(port, token) for _ in sessions]
    body = orjson.dumps({"content": WORDS, "stream": True} if stream else {"content": QUESTION})
    timed = Timed(pid)

    async def worker(http: RawHttp, mine: list[str]) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            status, data = await http.request("POST", f"/api/v1/sessions/{mine[i // TURNS_PER_SESSION]}/messages", body)
            if status == 200 and (not stream or b"event: done" in data):
                timed.latencies.append(time.perf_counter() - started)
            else:
                timed.failed += 1

    await timed.run(*(worker(http, mine) for http, mine in zip(connections, sessions, strict=True)))
    for http in connections:
        http.close()
    return timed


async def run_creates(port: int, token: str, pid: int, creates: int) -> Timed:
    connections = [RawHttp(port, token) for _ in range(CREATE_CONCURRENCY)]
    for http in connections:
        await http.connect()
    timed = Timed(pid)

    async def worker(http: RawHttp) -> None:
        for _ in range(creates // CREATE_CONCURRENCY):
            started = time.perf_counter()
            await create(http)
            timed.latencies.append(time.perf_counter() - started)

    await timed.run(*(worker(http) for http in connections))
    for http in connections:
        http.close()
    return timed


async def run_reads(port: int, token: str, pid: int, reads: int, path_of: Callable[[int], str]) -> Timed:
    """`reads` GETs at 16 clients, the i-th of `path_of(i)`."""
    connections = [RawHttp(port, token) for _ in range(CREATE_CONCURRENCY)]
    for http in connections:
        await http.connect()
    timed = Timed(pid)

    async def worker(http: RawHttp, first: int) -> None:
        for i in range(first, first + reads // CREATE_CONCURRENCY):
            started = time.perf_counter()
            status, _ = await http.request("GET", path_of(i))
            if status == 200:
                timed.latencies.append(time.perf_counter() - started)
            else:
                timed.failed += 1

    await timed.run(*(worker(http, n * reads) for n, http in enumerate(connections)))
    for http in connections:
        http.close()
    return timed


class Monitor:
    """Redis MONITOR in a thread, counting the commands that name keys under `prefix`."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.sent: Counter[str] = Counter()
        self.scripted: Counter[str] = Counter()
        self._client = redis.Redis.from_url(url)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # let the last commands arrive
        self._stop.set()  # the thread ends at the next command Redis sees (it is shared, and busy)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            for event in monitor.listen():
                if self._stop.is_set():
                    return
                command = event["command"]
                if self.prefix not in command:
                    continue
                name = command.split(" ", 1)[0].upper()
                (self.scripted if event.get("client_type") == "lua" else self.sent)[name] += 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=2000, help="turns per concurrency level (0: none)")
    parser.add_argument("--concurrency", default="1,16", help="for the turns; creations run at 16")
    parser.add_argument("--stream", action="store_true", help="50-delta SSE streams instead of native turns")
    parser.add_argument("--creates", type=int, default=2000, help="session creations (0: none)")
    parser.add_argument("--reads", type=int, default=0, help="session lists and reads each, at 16 (0: none)")
    parser.add_argument("--monitor", type=int, default=0, help="turns counted under Redis MONITOR (0: none)")
    parser.add_argument("--database", default="", help="DATABASE_URL for the gateway (default: SQLite)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    what, unit = ("50-delta SSE stream", "stream") if args.stream else ("native turn", "turn")
    extra = {"DATABASE_URL": args.database} if args.database else {}
    with stack(redis_url=args.redis_url, extra_env=extra) as run:
        port, gateway = run.start_gateway("uvicorn")
        turn_run = functools.partial(run_turns, port, run.token, gateway.pid, stream=args.stream)
        await turn_run(await make_sessions(port, run.token, 4, 400), 400)  # warm-up
        print(
            f"# gateway CPU per {what}, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
            f"{os.cpu_count()} cores, {args.database or 'sqlite'}"
        )
        for c in [int(c) for c in args.concurrency.split(",")] if args.turns else []:
            timed = await turn_run(await make_sessions(port, run.token, c, args.turns), args.turns)
            print(timed.line("streams" if args.stream else "turns", c, unit), flush=True)
        if args.creates:
            timed = await run_creates(port, run.token, gateway.pid, args.creates)
            print(timed.line("creations", CREATE_CONCURRENCY, "each"), flush=True)
        if args.reads:
            ids = [session for mine in await make_sessions(port, run.token, 1, 1000) for session in mine]
            timed = await run_reads(port, run.token, gateway.pid, args.reads, lambda i: "/api/v1/sessions?limit=20")
            print(timed.line("lists", CREATE_CONCURRENCY, "each"), flush=True)
            timed = await run_reads(
                port, run.token, gateway.pid, args.reads, lambda i: f"/api/v1/sessions/{ids[i % len(ids)]}"
            )
            print(timed.line("reads", CREATE_CONCURRENCY, "each"), flush=True)
        if args.monitor:
            sessions = await make_sessions(port, run.token, 1, args.monitor)  # creation is not a turn: not counted
            with Monitor(args.redis_url, run.env["REDIS_KEY_PREFIX"]) as seen:
                ok = len((await turn_run(sessions, args.monitor)).latencies)
            print(f"# Redis commands per {what} on the run's keys ({ok} turns, c=1)")
            for label, counts in (("sent by the gateway", seen.sent), ("run by its scripts", seen.scripted)):
                total = sum(counts.values()) / max(ok, 1)
                detail = ", ".join(f"{name} {n / max(ok, 1):.2f}" for name, n in counts.most_common())
                print(f"{label:>20}: {total:5.2f}   {detail}")


if __name__ == "__main__":
    asyncio.run(main())
