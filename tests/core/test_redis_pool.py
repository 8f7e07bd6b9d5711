"""The bounded pool's cheap checkout keeps what the pool promised: its bound, its wait, and no
connection handed out that Redis closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis
from redis.asyncio import Redis

from core.redis_clients import command, retry_policy, round_trip
from core.redis_pool import BoundedPool


@pytest.fixture
async def make_client(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[..., Redis]]:
    """A client on its own `BoundedPool`, its connections named for the test (CLIENT LIST)."""
    made: list[Redis] = []

    def make(*, max_connections: int, retries: int = 1, timeout: float = 2.0) -> Redis:
        pool = BoundedPool.from_url(
            redis_url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            client_name=redis_prefix.replace(":", "-"),
            retry=retry_policy(retries),
        )
        made.append(Redis(connection_pool=pool))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


def open_connections(redis_url: str, name: str) -> int:
    return sum(1 for each in redis.Redis.from_url(redis_url).client_list() if each["name"] == name)


async def test_a_burst_past_the_bound_all_completes_on_no_more_connections_than_the_bound(
    make_client: Callable[..., Redis], redis_url: str, redis_prefix: str
) -> None:
    client = make_client(max_connections=3)
    name = redis_prefix.replace(":", "-")
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(await asyncio.to_thread(open_connections, redis_url, name))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    # Each holds its connection for 50 ms (BLPOP on an empty list, then nil): 20 of them on 3.
    replies = await asyncio.gather(*(round_trip(client, [("BLPOP", f"{redis_prefix}:empty", 0.05)]) for _ in range(20)))
    done.set()
    await watcher
    assert replies == [[None]] * 20
    assert max(seen) == 3
    assert open_connections(redis_url, name) == 3  # kept for the next burst, not closed


async def test_a_caller_waiting_for_a_connection_is_not_overtaken_by_a_later_one(
    make_client: Callable[..., Redis], redis_prefix: str
) -> None:
    client = make_client(max_connections=1)
    finished: list[str] = []

    async def hold(name: str, seconds: float) -> None:
        await round_trip(client, [("BLPOP", f"{redis_prefix}:empty", seconds)])
        finished.append(name)

    first = asyncio.create_task(hold("first", 0.1))
    await asyncio.sleep(0.02)
    waiting = asyncio.create_task(hold("waiting", 0.01))  # the connection is out: it waits
    await asyncio.sleep(0.02)
    # The first's connection comes back while "waiting" waits: a newcomer must not take it.
    await first
    await round_trip(client, [("PING",)])
    finished.append("later")
    await waiting
    assert finished == ["first", "waiting", "later"]


async def test_a_connection_that_redis_closed_while_idle_is_not_handed_out_again(
    make_client: Callable[..., Redis], redis_url: str, redis_prefix: str
) -> None:
    client = make_client(max_connections=1, retries=0)  # no retry to hide a dead connection
    before = await command(client, "CLIENT", "ID")
    redis.Redis.from_url(redis_url).client_kill_filter(_id=before)
    await asyncio.sleep(0.05)  # the close reaches the idle connection
    after = await command(client, "CLIENT", "ID")
    assert after != before
    assert await command(client, "ECHO", "still answers") == b"still answers"
