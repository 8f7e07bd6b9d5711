"""A client per event loop, made on first use and closed per loop.

Why a cache keyed by loop rather than one client per process: the async clients we use
(redis.asyncio connections, `grpc.aio` channels, the Azure SDK's aiohttp sessions) belong to
the event loop that opened them, and using one from another loop fails or hangs. The server
runs one loop, but not everything does: management commands run theirs with `asyncio.run`,
asgiref's `async_to_sync` (DRF views, the admin) runs one of its own when its thread has
none, and every async test has its own loop. Each gets its own client; a loop that goes away
takes its entry with it (the keys are weak), so a finished loop leaves nothing behind in a
store object that lives as long as the process.

This is on the turn hot path: a call is one dict lookup on the running loop."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """`make()` once per running event loop; `close()` closes (and forgets) this loop's one.

    `T` is whatever belongs together per loop: a client, or a client with what was made from
    it (a channel and its stub, a service client and its container client)."""

    __slots__ = ("_by_loop", "_close", "_make")

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def __call__(self) -> T:
        """This loop's value, made now if it has none yet (must be called inside a running loop)."""
        loop = asyncio.get_running_loop()
        value = self._by_loop.get(loop)
        if value is None:
            value = self._by_loop[loop] = self._make()
        return value

    async def close(self) -> None:
        """Close the running loop's value, if one was made; the next call makes a new one.
        Other loops' values are theirs to close (they cannot be closed from here)."""
        value = self._by_loop.pop(asyncio.get_running_loop(), None)
        if value is not None:
            await self._close(value)
