"""`PerLoop`: one client per event loop, on real event loops (and a real Redis for `LoopClients`)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from core.per_loop import PerLoop
from core.redis_clients import LoopClients


class Client:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False


class Made:
    """Makes numbered clients and records which ones were closed."""

    def __init__(self) -> None:
        self.clients: list[Client] = []

    def make(self) -> Client:
        self.clients.append(Client(len(self.clients)))
        return self.clients[-1]

    async def close(self, client: Client) -> None:
        await asyncio.sleep(0)  # closing is awaited on the loop that owns the client
        client.closed = True


def test_one_loop_gets_one_client_made_on_first_use() -> None:
    made = Made()
    per_loop = PerLoop(made.make, made.close)

    async def twice() -> tuple[Client, Client]:
        return per_loop(), per_loop()

    first, second = asyncio.run(twice())

    assert first is second
    assert len(made.clients) == 1


def test_each_loop_gets_its_own_client_and_closes_only_its_own() -> None:
    made = Made()
    per_loop = PerLoop(made.make, made.close)
    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:

        async def get() -> Client:
            return per_loop()

        a, b = loop_a.run_until_complete(get()), loop_b.run_until_complete(get())
        assert a is not b

        loop_a.run_until_complete(per_loop.close())
        assert a.closed and not b.closed
        assert loop_b.run_until_complete(get()) is b  # untouched by the other loop's close

        again = loop_a.run_until_complete(get())
        assert again is not a and not again.closed  # a closed loop's client is made anew
        assert len(made.clients) == 3
    finally:
        loop_a.close()
        loop_b.close()


def test_close_without_a_client_closes_nothing() -> None:
    made = Made()
    per_loop = PerLoop(made.make, made.close)

    asyncio.run(per_loop.close())

    assert made.clients == []


def test_a_finished_loop_leaves_no_client_behind() -> None:
    made = Made()
    per_loop = PerLoop(lambda: Client(0), made.close)  # nothing but the cache holds the client

    async def get() -> Client:
        return per_loop()

    loop = asyncio.new_event_loop()
    client = weakref.ref(loop.run_until_complete(get()))
    loop.close()
    del loop
    gc.collect()

    assert client() is None  # the cache held the loop weakly, and with it the client


async def test_redis_clients_work_on_each_loop_that_uses_them(redis_url: str, redis_prefix: str) -> None:
    clients = LoopClients(redis_url, max_connections=2)
    key = f"{redis_prefix}:per-loop"

    async def on_another_loop() -> bytes | str | None:
        try:
            return await clients().get(key)
        finally:
            await clients.close()

    try:
        await clients().set(key, b"here", ex=60)
        # A thread with a loop of its own, as asgiref's async_to_sync makes: its own client, not ours.
        assert await asyncio.to_thread(asyncio.run, on_another_loop()) == b"here"
        assert await clients().get(key) == b"here"  # ours still works after the other was closed
        await clients().delete(key)
    finally:
        await clients.close()
