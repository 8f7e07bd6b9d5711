"""Per-owner limits, in memory and in Redis (shared by every instance)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.errors import RateLimited, StoreUnavailable
from limits.errors import OwnerSocketLimit, OwnerStreamLimit
from limits.memory import MemoryLimiter
from limits.ports import OwnerLimiter
from limits.redis import RedisLimiter
from tests.redis_cluster import on_cluster_or


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def limiter(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[OwnerLimiter]:
    limits = {"requests_per_minute": 3, "tokens_per_minute": 100, "streams_per_owner": 2, "sockets_per_owner": 2}
    if request.param == "memory":
        yield MemoryLimiter(**limits)
    else:
        url, prefix, cluster = on_cluster_or(request, redis_url, redis_prefix)
        redis_limiter = RedisLimiter(url=url, prefix=prefix, cluster=cluster, **limits)
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


async def test_open_sockets_per_owner_are_bounded_kept_and_freed(limiter: OwnerLimiter) -> None:
    await limiter.open_socket("o_alice", "w1")
    await limiter.open_socket("o_alice", "w2")

    with pytest.raises(OwnerSocketLimit) as refused:
        await limiter.open_socket("o_alice", "w3")
    await limiter.open_socket("o_alice", "w1")  # keeping a counted socket is not opening one
    await limiter.open_socket("o_bob", "w1")  # another owner has their own count
    await limiter.close_socket("o_alice", "w1")
    await limiter.open_socket("o_alice", "w3")

    assert refused.value.status == 429 and refused.value.code == "owner_socket_limit"


async def test_open_sockets_are_counted_across_instances_and_lapse_unless_kept(
    redis_url: str, redis_prefix: str
) -> None:
    first, second = (
        RedisLimiter(url=redis_url, prefix=redis_prefix, sockets_per_owner=2, socket_seconds=1) for _ in range(2)
    )
    await first.open_socket("o_alice", "w1")
    await second.open_socket("o_alice", "w2")
    with pytest.raises(OwnerSocketLimit):
        await first.open_socket("o_alice", "w3")

    await asyncio.sleep(2.5)  # neither was kept: as if their instances had died

    await second.open_socket("o_alice", "w3")
    await second.forget("o_alice")
    await first.close()
    await second.close()


async def test_forgetting_an_owner_clears_their_counts(limiter: OwnerLimiter) -> None:
    for _ in range(3):
        await limiter.admit("o_alice")

    await limiter.forget("o_alice")

    await limiter.admit("o_alice")


async def test_an_owners_counts_are_described_for_their_export(limiter: OwnerLimiter) -> None:
    nothing = {"requests_this_minute": 0, "tokens_this_minute": 0, "open_streams": 0, "open_websockets": 0}
    assert await limiter.describe("o_alice") == nothing
    await limiter.admit("o_alice")
    await limiter.admit("o_alice")
    await limiter.charge("o_alice", 7)
    await limiter.open_stream("o_alice", "s1")
    await limiter.open_socket("o_alice", "w1")
    await limiter.admit("o_bob")
    await limiter.open_socket("o_bob", "w2")

    assert await limiter.describe("o_alice") == {
        "requests_this_minute": 2,
        "tokens_this_minute": 7,
        "open_streams": 1,
        "open_websockets": 1,
    }


async def test_forgetting_an_owner_leaves_other_keys_under_their_tag(redis_url: str, redis_prefix: str) -> None:
    """The session store keeps the owner's index under the same hash tag: erasure reads it next."""
    limiter = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=5, streams_per_owner=2)
    other = aioredis.Redis.from_url(redis_url)
    index = f"{redis_prefix}:o:{{o_alice}}:i"
    await other.zadd(index, {"session": 0})
    await limiter.admit("o_alice")
    await limiter.open_stream("o_alice", "s1")
    await limiter.open_socket("o_alice", "w1")

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


async def test_batched_counts_refuse_at_once_and_reach_redis_later(redis_url: str, redis_prefix: str) -> None:
    limiter = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=3, sync_seconds=60)
    for _ in range(3):
        await limiter.admit("o_alice")

    with pytest.raises(RateLimited):
        await limiter.admit("o_alice")  # counted here, before any sync came back

    await limiter.flush()
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}:o:{{o_alice}}:rl:*")]
    assert [await client.hget(k, "r") for k in keys] == [b"4"]
    await client.aclose()
    await limiter.close()


async def test_batched_instances_see_each_others_counts(redis_url: str, redis_prefix: str) -> None:
    first = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=5, sync_seconds=60)
    second = RedisLimiter(url=redis_url, prefix=redis_prefix, requests_per_minute=5, sync_seconds=60)
    for _ in range(3):
        await first.admit("o_alice")
    await first.flush()

    await second.admit("o_alice")  # its first: it knows of none but its own yet
    await second.flush()  # now it knows the other three
    await second.admit("o_alice")  # the fifth
    with pytest.raises(RateLimited):
        await second.admit("o_alice")

    await first.close()
    await second.close()


async def test_with_redis_down_batched_counting_goes_on_and_exact_counting_is_503() -> None:
    from tests.support import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    batched = RedisLimiter(url=url, requests_per_minute=2, sync_seconds=1)
    exact = RedisLimiter(url=url, requests_per_minute=2)

    await batched.admit("o_alice")
    await batched.admit("o_alice")
    with pytest.raises(RateLimited):
        await batched.admit("o_alice")  # still limited, by its own counts
    with pytest.raises(StoreUnavailable):
        await exact.admit("o_alice")

    await batched.close()  # the unsent counts are kept for a sync that never comes: no error
    await exact.close()
