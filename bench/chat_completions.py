"""What `/v1/chat/completions` costs over the native turn, measured side by side in one run.

Starts the echo model server and one gateway (uvicorn) against the real Redis, as the other
benchmarks do, and drives both APIs with an ordinary OpenAI-shaped load generator: httpx
clients on keep-alive connections POSTing OpenAI's body (`model`, `messages`, `stream`), the
way any OpenAI-compatible load tool does. The native path is the same client POSTing
`/api/v1/sessions/{id}/messages` on sessions of ten turns (as `turn_overhead.py`); the Chat
Completions client sends the history such a session holds, so the model is asked the same.

Each cell (API x whole/streamed x clients) runs `--turns` turns; the two APIs alternate, and
`--rounds` repeats everything, so drift on a shared machine hits both alike. It prints each
cell (rate, p50, p99, the gateway process's CPU per request) and then the medians over the
rounds of the /v1 layer's cost at one client: p50 and CPU per turn over the native turn.
Issue 14's goal: at most 0.2 ms at one client. Figures, not assertions.

`--paired` measures that goal request by request instead: one client sends a native turn, a
`/v1/responses` turn and a `/v1/chat/completions` turn, whole and streamed, in a shuffled
order (seeded: a rotation had each kind always follow the same other, and so charged it what
that one left running), `--turns` times, so all six share every moment of the run's noise.
The gateway's CPU is read (its process CPU clock, all threads, in ns) after each request and a
short pause, so what a request leaves running (its tokens charged off the reply's path) counts
for it. It prints each kind's p50, p99 and CPU per turn, and each /v1 path's added p50 and CPU
over the native turn (and the load generator's added CPU: its share of the added p50, reading
larger answers); `--rounds` repeats it, with the medians over the rounds.

    python bench/chat_completions.py [--turns 400] [--concurrency 1,16] [--rounds 3]
    python bench/chat_completions.py --paired [--turns 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson
from common import commit, cpu_seconds, percentile, stack
from turn_overhead import QUESTION, SYSTEM_PROMPT, TURNS_PER_SESSION, bench_direct

logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

GOAL_ADDED_MS = 0.2
CHAT, NATIVE, RESPONSES = "chat/completions", "native", "responses"
APIS = {"native": NATIVE, "chat": CHAT, "responses": RESPONSES}
Request = Callable[[], Awaitable[bool]]  # one turn; False when it failed
SETTLE_SECONDS = 0.002  # after a paired request, before its CPU is read: what it left running ends


@dataclass
class Cell:
    api: str
    stream: bool
    concurrency: int
    latencies: list[float]
    elapsed: float
    cpu: float
    errors: int

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5) * 1000

    @property
    def cpu_ms(self) -> float:
        return self.cpu / max(len(self.latencies), 1) * 1000

    def line(self) -> str:
        kind = "streamed" if self.stream else "whole"
        return (
            f"{self.api:<17}{kind:<9} c={self.concurrency:<3} n={len(self.latencies):<5}"
            f"{len(self.latencies) / self.elapsed:6.0f}/s"
            f"   p50 {self.p50:6.2f} ms   p99 {percentile(self.latencies, 0.99) * 1000:7.2f} ms"
            f"   CPU {self.cpu_ms:5.2f} ms/turn" + (f"   errors {self.errors}" if self.errors else "")
        )


def chat_messages(turns: int) -> list[dict[str, str]]:
    """OpenAI's `messages` for a conversation `turns` turns in: what a native session would hold."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for _ in range(turns):
        messages += [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": f"Echo: {QUESTION}"}]
    return [*messages, {"role": "user", "content": QUESTION}]


async def post(http: httpx.AsyncClient, path: str, body: bytes, *, stream: bool, done: bytes) -> bool:
    if not stream:
        response = await http.post(path, content=body)
        return response.status_code == 200
    async with http.stream("POST", path, content=body) as response:
        data = b"".join([chunk async for chunk in response.aiter_raw()])
    return response.status_code == 200 and done in data


def chat_worker(http: httpx.AsyncClient, stream: bool) -> Request:
    count = 0
    bodies = [
        orjson.dumps({"model": "echo", "messages": chat_messages(n), **({"stream": True} if stream else {})})
        for n in range(TURNS_PER_SESSION)
    ]

    async def turn() -> bool:
        nonlocal count
        body = bodies[count % TURNS_PER_SESSION]
        count += 1
        return await post(http, "/v1/chat/completions", body, stream=stream, done=b"[DONE]")

    return turn


async def session_worker(http: httpx.AsyncClient, api: str, stream: bool, turns: int) -> Request:
    """Turns on sessions created now, before the clock starts (creation is not a turn): the native
    turn, or a Responses turn in the session as a conversation (the same work, through /v1)."""
    sessions = []
    for _ in range(-(-turns // TURNS_PER_SESSION)):
        created = await http.post("/api/v1/sessions", content=orjson.dumps({"system_prompt": SYSTEM_PROMPT}))
        assert created.status_code == 201, created.text
        sessions.append(str(created.json()["id"]))
    flag = {"stream": True} if stream else {}
    count = 0

    async def native() -> bool:
        nonlocal count
        path = f"/api/v1/sessions/{sessions[count // TURNS_PER_SESSION]}/messages"
        count += 1
        return await post(http, path, orjson.dumps({"content": QUESTION, **flag}), stream=stream, done=b"event: done")

    async def responses() -> bool:
        nonlocal count
        conversation = "conv_" + sessions[count // TURNS_PER_SESSION].replace("-", "")
        count += 1
        body = orjson.dumps({"model": "echo", "conversation": conversation, "input": QUESTION, **flag})
        return await post(http, "/v1/responses", body, stream=stream, done=b"response.completed")

    return native if api == NATIVE else responses


async def run_cell(base_url: str, token: str, pid: int, api: str, stream: bool, concurrency: int, turns: int) -> Cell:
    """`turns` turns of `api` over `concurrency` clients: latencies and the gateway's CPU."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    clients = [httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) for _ in range(concurrency)]
    each = -(-turns // concurrency)
    workers = [
        chat_worker(http, stream) if api == CHAT else await session_worker(http, api, stream, each) for http in clients
    ]
    if api == CHAT:
        for http in clients:  # the others connected while creating their sessions
            await http.get("/v1/models")
    latencies: list[float] = []
    errors = 0

    async def loop(turn: Request) -> None:
        nonlocal errors
        for _ in range(each):
            started = time.perf_counter()
            if await turn():
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    cpu_before, began = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(loop(w) for w in workers))
    elapsed, cpu = time.perf_counter() - began, cpu_seconds(pid) - cpu_before
    for http in clients:
        await http.aclose()
    return Cell(api, stream, concurrency, latencies, elapsed, cpu, errors)


def summary(cells: list[Cell], apis: list[str], stream: bool, concurrency: int) -> list[str]:
    """Each /v1 API's median p50 and CPU per turn against the native turn's, same run."""

    def median(api: str, value: Callable[[Cell], float]) -> float:
        return statistics.median(
            value(c) for c in cells if c.api == api and c.stream == stream and c.concurrency == concurrency
        )

    kind = "streamed" if stream else "whole"
    native_p50, native_cpu = median(NATIVE, lambda c: c.p50), median(NATIVE, lambda c: c.cpu_ms)
    lines = [
        f"{NATIVE:<17}{kind:<9} c={concurrency:<3} p50 {native_p50:6.2f} ms            CPU {native_cpu:5.2f} ms/turn"
    ]
    for api in apis:
        if api != NATIVE:
            p50, cpu = median(api, lambda c: c.p50), median(api, lambda c: c.cpu_ms)
            lines.append(
                f"{api:<17}{kind:<9} c={concurrency:<3} p50 {p50:6.2f} ms ({p50 - native_p50:+6.2f})"
                f"   CPU {cpu:5.2f} ms/turn ({cpu - native_cpu:+5.2f})"
            )
    return lines


def process_cpu_clock(pid: int) -> int:
    """The clock id of `pid`'s CPU time (all its threads, ns resolution): the scheduler's ticks
    that `cpu_seconds` reads are 10 ms, coarser than one request."""
    clock = ctypes.c_int()
    if ctypes.CDLL(None, use_errno=True).clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError(ctypes.get_errno(), "clock_getcpuclockid")
    return clock.value


@dataclass
class Paired:
    """One kind of request in a paired run: its latencies, the gateway CPU each took, and the
    load generator's own (sending it and reading its answer)."""

    api: str
    stream: bool
    latencies: list[float]
    cpu: list[float]
    client_cpu: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5) * 1000

    @property
    def cpu_ms(self) -> float:
        return statistics.fmean(self.cpu) * 1000 if self.cpu else float("nan")

    @property
    def client_cpu_ms(self) -> float:
        return statistics.fmean(self.client_cpu) * 1000 if self.client_cpu else float("nan")

    def line(self) -> str:
        kind = "streamed" if self.stream else "whole"
        return (
            f"{self.api:<17}{kind:<9} n={len(self.latencies):<5} p50 {self.p50:6.2f} ms"
            f"   p99 {percentile(self.latencies, 0.99) * 1000:7.2f} ms   CPU {self.cpu_ms:5.2f} ms/turn"
            f"   client CPU {self.client_cpu_ms:5.2f} ms" + (f"   errors {self.errors}" if self.errors else "")
        )


async def run_paired(base_url: str, token: str, pid: int, apis: list[str], turns: int) -> list[Paired]:
    """`turns` requests of each API, whole and streamed, one client, the kinds interleaved."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    clock = process_cpu_clock(pid)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        kinds: list[tuple[Paired, Request]] = []
        for api in apis:
            for stream in (False, True):
                send = chat_worker(http, stream) if api == CHAT else await session_worker(http, api, stream, turns)
                kinds.append((Paired(api, stream, [], []), send))
        shuffle = random.Random(turns)  # the same orders each run
        for _ in range(turns):
            order = list(kinds)
            shuffle.shuffle(order)  # none always follows another: what one leaves running is spread over all
            for paired, send in order:
                cpu_before = time.clock_gettime(clock)
                started, client_before = time.perf_counter(), time.thread_time()
                ok = await send()
                latency, client = time.perf_counter() - started, time.thread_time() - client_before
                await asyncio.sleep(SETTLE_SECONDS)
                if ok:
                    paired.latencies.append(latency)
                    paired.cpu.append(time.clock_gettime(clock) - cpu_before)
                    paired.client_cpu.append(client)
                else:
                    paired.errors += 1
    return [paired for paired, _ in kinds]


def paired_summary(rounds: list[list[Paired]]) -> list[str]:
    """Each /v1 path's added p50 and CPU per turn over the native turn's, whole and streamed:
    the medians over the rounds (each round's difference taken within the round)."""
    lines = []
    for stream in (False, True):
        kind = "streamed" if stream else "whole"
        per_round = [{p.api: p for p in kinds if p.stream == stream} for kinds in rounds]
        native_p50 = statistics.median(r[NATIVE].p50 for r in per_round)
        native_cpu = statistics.median(r[NATIVE].cpu_ms for r in per_round)
        lines.append(f"{NATIVE:<17}{kind:<9} p50 {native_p50:6.2f} ms                   CPU {native_cpu:5.2f} ms/turn")
        for api in per_round[0]:
            if api == NATIVE:
                continue
            added_p50 = [r[api].p50 - r[NATIVE].p50 for r in per_round]
            added_cpu = [r[api].cpu_ms - r[NATIVE].cpu_ms for r in per_round]
            added_client = [r[api].client_cpu_ms - r[NATIVE].client_cpu_ms for r in per_round]
            lines.append(
                f"{api:<17}{kind:<9} p50 {statistics.median(r[api].p50 for r in per_round):6.2f} ms"
                f" ({statistics.median(added_p50):+6.2f}: {min(added_p50):+.2f}..{max(added_p50):+.2f})"
                f"   CPU {statistics.median(r[api].cpu_ms for r in per_round):5.2f} ms/turn"
                f" ({statistics.median(added_cpu):+5.2f}: {min(added_cpu):+.2f}..{max(added_cpu):+.2f})"
                f"   client CPU {statistics.median(added_client):+5.2f}"
            )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=400, help="turns per cell")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of every cell, the APIs' order rotating")
    parser.add_argument("--apis", default="native,chat,responses", help="of native, chat, responses")
    parser.add_argument("--seconds", type=float, default=2.0, help="the model server alone's run, for scale")
    parser.add_argument("--paired", action="store_true", help="one client, the APIs request by request (see above)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    levels = [1] if args.paired else [int(c) for c in args.concurrency.split(",")]
    apis = [APIS[a] for a in args.apis.split(",")]
    if NATIVE not in apis:
        apis.insert(0, NATIVE)  # what the others are measured against
    with stack(redis_url=args.redis_url) as run:
        port, gateway = run.start_gateway("uvicorn")
        base_url = f"http://127.0.0.1:{port}"
        print(f"# chat completions, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores")
        for c in levels:
            print(f"{(await bench_direct(f'127.0.0.1:{run.backend_port}', c, args.seconds)).line()}   (for scale)")
        for api in apis:  # warm-up
            for stream in (False, True):
                await run_cell(base_url, run.token, gateway.pid, api, stream, 4, 200)
        if args.paired:
            await paired(base_url, run.token, gateway.pid, apis, args.turns, args.rounds)
            return
        cells: list[Cell] = []
        for r in range(args.rounds):
            order = apis[r % len(apis) :] + apis[: r % len(apis)]
            for c in levels:
                for stream in (False, True):
                    for api in order:
                        cell = await run_cell(base_url, run.token, gateway.pid, api, stream, c, args.turns)
                        cells.append(cell)
                        print(cell.line(), flush=True)
    print(
        f"\n# medians over {args.rounds} rounds (against native), same run; goal: /v1 adds <= {GOAL_ADDED_MS} ms at c=1"
    )
    for c in levels:
        for stream in (False, True):
            print("\n".join(summary(cells, apis, stream, c)))


async def paired(base_url: str, token: str, pid: int, apis: list[str], turns: int, rounds: int) -> None:
    kinds_by_round = []
    for r in range(rounds):
        kinds = await run_paired(base_url, token, pid, apis, turns)
        kinds_by_round.append(kinds)
        print(f"# round {r + 1}, paired, c=1")
        print("\n".join(p.line() for p in kinds), flush=True)
    print(
        f"\n# medians over {rounds} rounds (against native; the rounds' range after the colon),"
        f" paired, c=1; goal: /v1 adds <= {GOAL_ADDED_MS} ms"
    )
    print("\n".join(paired_summary(kinds_by_round)))


if __name__ == "__main__":
    asyncio.run(main())
