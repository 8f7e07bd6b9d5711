"""The Redis client path of a turn alone, in one process: CPU per turn, no servers around it.

Runs what a turn asks of Redis (the Redis session store's `begin_turn` and `append_turn`, an
Idempotency-Key claim with `--idempotent`, and the limiter's admit and charge) against the real
Redis, inside a recorded span as a request would be, with the gateway's tracing set up (its
default: spans made, not exported). Prints this process's CPU per turn, which on a shared
machine moves far less than any wall-clock figure; alternate two commits to compare them.

    python bench/redis_path.py [--turns 3000] [--idempotent] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

import common  # noqa: F401  (sets up Django and the import path)
import redis
from opentelemetry import trace

from core.observability.tracing import setup_tracing
from core.result import Ok
from limits.redis import RedisLimiter
from llm_backend.ports import TokenUsage
from sessions_app.domain import ChatMessage, ChatSession, Role, SessionStatus
from sessions_app.idempotency import IdempotentRequest, RedisIdempotencyStore
from sessions_app.stores.redis import RedisSessionStore

TURNS_PER_SESSION = 10


async def run(url: str, prefix: str, turns: int, idempotent: bool) -> tuple[float, float]:
    """CPU and wall seconds per turn."""
    store = RedisSessionStore(url=url, prefix=prefix)
    claims = RedisIdempotencyStore(url=url, prefix=prefix)
    limiter = RedisLimiter(url=url, prefix=prefix, sync_seconds=0.1, requests_per_minute=10**9)
    tracer = trace.get_tracer("bench")
    now = datetime.now(UTC)
    sessions = []
    for _ in range(-(-turns // TURNS_PER_SESSION)):
        session = ChatSession(
            id=str(uuid.uuid4()),
            owner="bench",
            status=SessionStatus.ACTIVE,
            model="echo",
            system_prompt="You are a concise assistant.",
            metadata={},
            created_at=now,
            last_activity_at=now,
        )
        await store.create(session, max_sessions_per_owner=10**6)
        sessions.append(session.id)
    question = "What is the capital of France? Answer in one short sentence."
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(turns):
        session_id = sessions[n // TURNS_PER_SESSION]
        with tracer.start_as_current_span("POST /api/v1/sessions/{id}/messages"):
            await limiter.admit("bench")
            if idempotent:
                await claims.claim("bench", IdempotentRequest(uuid.uuid4().hex, "f" * 64), pending_seconds=600)
            token = uuid.uuid4().hex
            begun = await store.begin_turn(session_id, owner="bench", token=token, lock_seconds=30, history_limit=20)
            assert isinstance(begun, Ok), begun
            at = datetime.now(UTC)
            messages = (
                ChatMessage(uuid.uuid4().hex, Role.USER, question, at),
                ChatMessage(uuid.uuid4().hex, Role.ASSISTANT, f"Echo: {question}", at),
            )
            await store.append_turn(
                session_id, owner="bench", token=token, messages=messages, usage=TokenUsage(20, 20), at=at
            )
            await limiter.charge("bench", 40)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await limiter.close()
    await claims.close()
    await store.close()
    return cpu / turns, wall / turns


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idempotent", action="store_true", help="an Idempotency-Key claim on every turn too")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    setup_tracing()

    prefix = f"gwbench:{uuid.uuid4().hex[:8]}"
    try:
        await run(args.redis_url, prefix, 300, args.idempotent)  # warm-up
        for _ in range(args.rounds):
            cpu, wall = await run(args.redis_url, prefix, args.turns, args.idempotent)
            print(f"redis path per turn: CPU {cpu * 1e3:6.3f} ms   wall {wall * 1e3:6.3f} ms")
    finally:
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


if __name__ == "__main__":
    asyncio.run(main())
