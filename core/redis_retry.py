"""The retry policy every Redis client of the gateway shares.

A connection Redis dropped (a restart, a failover) fails the first command sent
on it; retried at once on a fresh connection, and a few more times with a short
backoff, a blip costs a client nothing. Only Redis that stays unreachable
becomes `503 store_unavailable`.
"""

from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff


def redis_retry(retries: int = 3) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)
