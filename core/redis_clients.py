"""What every Redis-backed store shares: a client per event loop with redis-py's retry, and
one meaning for "Redis is down" (`503 store_unavailable`)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from core.errors import StoreUnavailable
from core.per_loop import PerLoop

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError)


def store_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis that stays unreachable after the client's retries is a 503, not a 500."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except TRANSIENT as exc:
            logger.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable() from exc

    return wrapper


def retry_policy(retries: int) -> Retry:
    """redis-py retries a command on connection errors and timeouts, backing off with jitter."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)


def bounded_pool(url: str, *, max_connections: int, timeout: float, retries: int) -> BlockingConnectionPool:
    """A bounded pool: under a burst, commands wait briefly for a free connection instead
    of opening thousands (or failing with "Too many connections")."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=retry_policy(retries),
    )


class LoopClients(PerLoop[Redis]):
    """A Redis client per event loop (see `core.per_loop`), each on its own bounded pool."""

    __slots__ = ()

    def __init__(self, url: str, *, max_connections: int = 32, timeout: float = 5.0, retries: int = 3) -> None:
        def make() -> Redis:
            pool = bounded_pool(url, max_connections=max_connections, timeout=timeout, retries=retries)
            return Redis(connection_pool=pool)

        super().__init__(make, Redis.aclose)


class WhenBack:
    """Writes that must still happen after Redis comes back, such as releasing a lock or a
    claim: tried now, and on `StoreUnavailable` again in the background, backing off, until
    they succeed or stop mattering (what they release has lapsed by then)."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    async def run(self, what: str, write: Callable[[], Awaitable[None]], *, give_up_after: float) -> None:
        try:
            await write()
        except StoreUnavailable:
            logger.warning("%s deferred until redis is back", what)
            task = asyncio.create_task(self._retry(what, write, give_up_after))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _retry(self, what: str, write: Callable[[], Awaitable[None]], give_up_after: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up_after
        delay = 0.25
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            try:
                await write()
            except StoreUnavailable:
                delay = min(delay * 2, 5.0)
                continue
            logger.info("%s done now that redis is back", what)
            return

    def cancel(self) -> None:
        for task in list(self._pending):
            task.cancel()
