"""A real model behind the gateway: time to first delta and tokens per second through the
gateway (SSE) against the same streams read straight from the llama.cpp model server,
at 1 and 4 concurrent streams. Needs `make install-model`.

    python bench/model_overhead.py [--streams 8] [--concurrency 1,4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field

import orjson
from common import RawHttp, percentile, stack

from llm_backend.grpc_client import GrpcChatBackend
from llm_backend.ports import ChatRequest, ContextMessage, Delta, GenerationParams, Role, StreamEnd

PROMPT = "Write a short poem about the sea."


@dataclass
class Stats:
    label: str
    concurrency: int
    first: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # tokens/s of each stream after its first delta
    tokens: int = 0
    elapsed: float = 0.0

    def line(self) -> str:
        first = percentile(self.first, 0.5) * 1000
        return (
            f"{self.label:<20} c={self.concurrency}  first delta p50 {first:7.1f} ms"
            f"   per stream {percentile(self.rates, 0.5):5.1f} tokens/s"
            f"   all streams {self.tokens / self.elapsed:5.1f} tokens/s"
        )


async def run(label: str, concurrency: int, streams: int, one: object) -> Stats:
    stats = Stats(label, concurrency)
    pending = list(range(streams))
    began = time.perf_counter()

    async def worker() -> None:
        while pending:
            pending.pop()
            first, total, tokens = await one()  # type: ignore[operator]
            stats.first.append(first)
            stats.rates.append((tokens - 1) / max(total - first, 1e-9))
            stats.tokens += tokens

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.elapsed = time.perf_counter() - began
    return stats


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8, help="streams per run")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    params = GenerationParams(max_tokens=args.max_tokens, temperature=0)
    print(
        f"# real model (llama.cpp, SmolLM2-135M-Instruct), {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{args.max_tokens} tokens per answer, {args.streams} streams per run"
    )
    with stack(redis_url=args.redis_url, adapter="llamacpp") as running:
        port, _ = running.start_gateway()
        backend = GrpcChatBackend(target=f"127.0.0.1:{running.backend_port}", first_delta_timeout=300)
        request = ChatRequest(model="smollm2", messages=[ContextMessage(Role.USER, PROMPT)], params=params)
        await wait_until_serving(backend)

        async def direct() -> tuple[float, float, int]:
            started = time.perf_counter()
            first, tokens = 0.0, 0
            async for event in backend.stream(request):
                if isinstance(event, Delta) and not first:
                    first = time.perf_counter() - started
                if isinstance(event, StreamEnd):
                    tokens = event.usage.output_tokens
            return first, time.perf_counter() - started, tokens

        body = orjson.dumps({"content": PROMPT, "stream": True, "max_tokens": args.max_tokens, "temperature": 0})

        async def through_gateway() -> tuple[float, float, int]:
            http = RawHttp(port, running.token)
            _, data = await http.request("POST", "/api/v1/sessions", b"{}")
            session_id = orjson.loads(data)["id"]
            started = time.perf_counter()
            await http.send("POST", f"/api/v1/sessions/{session_id}/messages", body)
            await http.read_head()
            first, last = 0.0, b""
            while chunk := await http.read_chunk():
                if not first and b"event: delta" in chunk:
                    first = time.perf_counter() - started
                last = chunk
            http.close()
            tokens = orjson.loads(last.split(b"data: ", 1)[1])["usage"]["output_tokens"]
            return first, time.perf_counter() - started, tokens

        await direct()  # warm the model
        for c in (int(x) for x in args.concurrency.split(",")):
            base = await run("model server (gRPC)", c, args.streams, direct)
            print(base.line())
            gated = await run("gateway (SSE)", c, args.streams, through_gateway)
            added = (percentile(gated.first, 0.5) - percentile(base.first, 0.5)) * 1000
            print(gated.line() + f"   added to first delta p50 {added:5.1f} ms")
        await backend.close()


async def wait_until_serving(backend: GrpcChatBackend) -> None:
    for _ in range(300):
        try:
            await backend.check()
            return
        except Exception:  # noqa: BLE001 - still loading
            await asyncio.sleep(0.1)
    raise RuntimeError("the model server never became ready")


if __name__ == "__main__":
    asyncio.run(main())
