"""The gateway's CPU per turn and its Redis commands per turn: figures that hold on a shared machine.

Wall-clock rates here move 2x with whatever else the machine runs; the CPU the gateway process
spends on a fixed number of turns moves far less. Starts the echo model server and one gateway
(uvicorn) against the real Redis, creates every session first (creation is not a turn), then runs
`--turns` native turns (10 per session, as `turn_overhead.py` does) at each concurrency and prints
the gateway process's user+system CPU per turn. Then, with `--monitor N`, runs N more turns at one
client under Redis MONITOR and prints the commands the run's keys saw per turn, by name, those a
client sent apart from those its Lua scripts ran (MONITOR slows Redis: no timing is taken then).
With `--stream`, the turns are 50-delta SSE streams instead.

    python bench/cpu_per_turn.py [--turns 2000] [--concurrency 1,16] [--monitor 200] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import threading
import time
from collections import Counter

import orjson
import redis
from common import ROOT, RawHttp, cpu_seconds, stack
from turn_overhead import QUESTION, SYSTEM_PROMPT, TURNS_PER_SESSION

WORDS = " ".join(f"w{i}" for i in range(49))  # "Echo: " plus 49 words: 50 deltas


class Load:
    """Connections and their sessions, made beforehand, for `turns` turns at `concurrency`."""

    def __init__(self, port: int, token: str, concurrency: int, turns: int, *, stream: bool) -> None:
        self.per_worker = -(-turns // concurrency)
        self.clients = [RawHttp(port, token) for _ in range(concurrency)]
        self.sessions: list[list[str]] = []
        self.body = orjson.dumps({"content": WORDS, "stream": True} if stream else {"content": QUESTION})
        self.stream = stream

    async def prepare(self) -> None:
        for http in self.clients:
            mine = []
            for _ in range(-(-self.per_worker // TURNS_PER_SESSION)):
                status, data = await http.request(
                    "POST", "/api/v1/sessions", orjson.dumps({"system_prompt": SYSTEM_PROMPT})
                )
                assert status == 201, data
                mine.append(orjson.loads(data)["id"])
            self.sessions.append(mine)

    async def run(self) -> tuple[int, int]:
        """Every turn; (succeeded, failed)."""
        results = await asyncio.gather(*(self._worker(h, s) for h, s in zip(self.clients, self.sessions, strict=True)))
        for http in self.clients:
            http.close()
        return sum(ok for ok, _ in results), sum(failed for _, failed in results)

    async def _worker(self, http: RawHttp, mine: list[str]) -> tuple[int, int]:
        ok = failed = 0
        for n in range(self.per_worker):
            path = f"/api/v1/sessions/{mine[n // TURNS_PER_SESSION]}/messages"
            if self.stream:
                await http.send("POST", path, self.body)
                status, chunked, length = await http.read_head()
                seen = b""
                if chunked:
                    while chunk := await http.read_chunk():
                        seen = chunk
                else:
                    assert http.reader is not None
                    await http.reader.readexactly(length)
                good = status == 200 and b"event: done" in seen
            else:
                status, _ = await http.request("POST", path, self.body)
                good = status == 200
            ok, failed = ok + good, failed + (not good)
        return ok, failed


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
    parser.add_argument("--turns", type=int, default=2000, help="turns per concurrency level")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--monitor", type=int, default=200, help="turns counted under MONITOR (0: none)")
    parser.add_argument("--stream", action="store_true", help="50-delta SSE streams instead of native turns")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    what = "50-delta SSE stream" if args.stream else "native turn"
    with stack(redis_url=args.redis_url) as run:
        port, gateway = run.start_gateway()
        warm_up = Load(port, run.token, 4, 200, stream=args.stream)
        await warm_up.prepare()
        await warm_up.run()
        print(f"# gateway CPU per {what}, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        for c in (int(c) for c in args.concurrency.split(",")):
            load = Load(port, run.token, c, args.turns, stream=args.stream)
            await load.prepare()
            cpu, began = cpu_seconds(gateway.pid), time.perf_counter()
            ok, failed = await load.run()
            cpu, elapsed = cpu_seconds(gateway.pid) - cpu, time.perf_counter() - began
            print(
                f"c={c:<3} {ok} turns in {elapsed:5.2f} s ({ok / elapsed:5.0f}/s): "
                f"gateway CPU {cpu * 1000 / max(ok, 1):6.3f} ms per turn" + (f"   {failed} failed" if failed else "")
            )
        if args.monitor:
            prefix = run.env["REDIS_KEY_PREFIX"]
            load = Load(port, run.token, 1, args.monitor, stream=args.stream)
            await load.prepare()
            with Monitor(args.redis_url, prefix) as seen:
                ok, _ = await load.run()
            print(f"# Redis commands per {what} on the run's keys ({ok} turns, c=1)")
            for label, counts in (("sent by the gateway", seen.sent), ("run by its scripts", seen.scripted)):
                total = sum(counts.values()) / max(ok, 1)
                detail = ", ".join(f"{name} {n / max(ok, 1):.2f}" for name, n in counts.most_common())
                print(f"{label:>20}: {total:5.2f}   {detail}")


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    asyncio.run(main())
