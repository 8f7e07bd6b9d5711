"""Per-owner limits, in memory and in Redis (shared by every instance)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.errors import RateLimited
from core.limits import MemoryLimiter, OwnerLimiter, OwnerStreamLimit, RedisLimiter


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[OwnerLimiter]:
    limits = {"requests_per_minute": 3, "tokens_per_minute": 100, "streams_per_owner": 2}
    if request.param == "memory":
        yield MemoryLimiter(**limits)
    else:
        redis_limiter = RedisLimiter(url=redis_url, prefix=redis_prefix, **limits)
        yield redis_limiter
        await redis_limiter.close()


async def test_requests_beyond_the_minute_limit_are_429_with_retry_after(limiter: OwnerLimiter) -> None:
    for _ in range(3):
        await limiter.admit("o_alice")

    with pytest.raises(RateLimited) as refused:
        await limiter.admit("o_alice")
    await limiter.admit("o_bob")  # another owner has their own budget

    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60


async def test_spent_tokens_close_the_minute(limiter: OwnerLimiter) -> None:
    await limiter.admit("o_alice")
    await limiter.charge("o_alice", 100)

    with pytest.raises(RateLimited, match="tokens"):
        await limiter.admit("o_alice")


async def test_open_streams_per_owner_are_bounded_and_freed(limiter: OwnerLimiter) -> None:
    await limiter.open_stream("o_alice", "s1")
    await limiter.open_stream("o_alice", "s2")

    with pytest.raises(OwnerStreamLimit) as refused:
        await limiter.open_stream("o_alice", "s3")
    await limiter.close_stream("o_alice", "s1")
    await limiter.open_stream("o_alice", "s3")

    assert refused.value.status == 429 and refused.value.code == "owner_stream_limit"


async def test_forgetting_an_owner_clears_their_counts(limiter: OwnerLimiter) -> None:
    for _ in range(3):
        await limiter.admit("o_alice")

    await limiter.forget("o_alice")

    await limiter.admit("o_alice")


async def test_forgetting_an_owner_leaves_other_keys_under_their_tag(redis_url: str, redis_prefix: str) -> None:
    """The session store keeps the owner's index under the same hash tag: erasure reads it next."""
    limiter = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=5, streams_per_owner=2)
    other = aioredis.Redis.from_url(redis_url)
    index = f"{redis_prefix}:o:{{o_alice}}:i"
    await other.zadd(index, {"session": 0})
    await limiter.admit("o_alice")
    await limiter.open_stream("o_alice", "s1")

    await limiter.forget("o_alice")

    assert await other.exists(index) == 1
    assert [k async for k in other.scan_iter(match=f"{redis_prefix}:o:{{o_alice}}:*")] == [index.encode()]
    await other.aclose()
    await limiter.close()


async def test_two_instances_share_the_redis_counts(redis_url: str, redis_prefix: str) -> None:
    first = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=2)
    second = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=2)

    await first.admit("o_alice")
    await second.admit("o_alice")

    with pytest.raises(RateLimited):
        await first.admit("o_alice")
    await first.close()
    await second.close()


async def test_zero_means_no_limit() -> None:
    unlimited = MemoryLimiter(requests_per_minute=0, tokens_per_minute=0, streams_per_owner=0)
    for n in range(50):
        await unlimited.admit("o_alice")
        await unlimited.open_stream("o_alice", str(n))
