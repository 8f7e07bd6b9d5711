"""Per-owner limits shared by every gateway instance: requests and model tokens per minute,
and streams open at once. Over a limit is `429 rate_limited` with Retry-After."""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from core.adapters import build_adapter
from core.errors import RateLimited, StoreUnavailable
from core.redis_retry import redis_retry

P = ParamSpec("P")
T = TypeVar("T")
WINDOW = 60  # seconds


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int = 600  # 0: no limit
    tokens_per_minute: int = 1_000_000
    streams_per_owner: int = 16
    stream_seconds: int = 3600  # an open stream's entry lapses after this, should its closing be lost


class OwnerStreamLimit(RateLimited):
    code = "owner_stream_limit"
    title = "Too many streams"
    default_detail = "You have as many replies streaming as allowed; wait for one to finish."


def retry_after(now: float) -> float:
    return WINDOW - now % WINDOW


class OwnerLimiter(Protocol):
    async def admit(self, owner: str) -> None:
        """Count one request; raise `RateLimited` if the owner is over a per-minute limit."""
        ...

    async def charge(self, owner: str, tokens: int) -> None:
        """Add model tokens the owner used to this minute's count."""
        ...

    async def open_stream(self, owner: str, stream_id: str) -> None:
        """Raise `OwnerStreamLimit` if the owner streams the most allowed already; else count it."""
        ...

    async def close_stream(self, owner: str, stream_id: str) -> None: ...

    async def forget(self, owner: str) -> None:
        """Drop every count about the owner (erasure)."""
        ...


class MemoryLimiter:
    """One process's counts: the embedded default, and the unit tests'."""

    def __init__(self, *, clock: Callable[[], float] = time.time, **limits: int) -> None:
        self.limits = Limits(**limits)
        self._clock = clock
        self._windows: dict[tuple[str, int], list[int]] = {}
        self._streams: dict[str, set[str]] = {}

    def _window(self, owner: str) -> list[int]:
        key = (owner, int(self._clock() // WINDOW))
        return self._windows.setdefault(key, [0, 0])

    async def admit(self, owner: str) -> None:
        counts = self._window(owner)
        counts[0] += 1
        _judge(self.limits, counts[0], counts[1], self._clock())

    async def charge(self, owner: str, tokens: int) -> None:
        self._window(owner)[1] += tokens

    async def open_stream(self, owner: str, stream_id: str) -> None:
        open_now = self._streams.setdefault(owner, set())
        if self.limits.streams_per_owner and len(open_now) >= self.limits.streams_per_owner:
            raise OwnerStreamLimit(retry_after=1)
        open_now.add(stream_id)

    async def close_stream(self, owner: str, stream_id: str) -> None:
        self._streams.get(owner, set()).discard(stream_id)

    async def forget(self, owner: str) -> None:
        self._streams.pop(owner, None)
        for key in [k for k in self._windows if k[0] == owner]:
            del self._windows[key]


def _judge(limits: Limits, requests: int, tokens: int, now: float) -> None:
    if limits.requests_per_minute and requests > limits.requests_per_minute:
        raise RateLimited(f"More than {limits.requests_per_minute} requests a minute.", retry_after=retry_after(now))
    if limits.tokens_per_minute and tokens >= limits.tokens_per_minute:
        raise RateLimited(f"More than {limits.tokens_per_minute} model tokens a minute.", retry_after=retry_after(now))


def _unavailable(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise StoreUnavailable() from exc

    return wrapper


_OPEN_STREAM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[4])
if tonumber(ARGV[3]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class RedisLimiter:
    """Counts in Redis under the owner's hash tag: one round trip per request."""

    def __init__(self, *, url: str, prefix: str = "gw", max_connections: int = 32, **limits: int) -> None:
        self.limits = Limits(**limits)
        self._url = url
        self._prefix = prefix
        self._max_connections = max_connections
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = weakref.WeakKeyDictionary()

    def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = Redis.from_url(
                self._url,
                max_connections=self._max_connections,
                socket_timeout=5,
                socket_connect_timeout=5,
                retry=redis_retry(),
            )
        return client

    def _key(self, owner: str, suffix: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:{suffix}"

    @_unavailable
    async def admit(self, owner: str) -> None:
        if not (self.limits.requests_per_minute or self.limits.tokens_per_minute):
            return
        now = time.time()
        key = self._key(owner, f"rl:{int(now // WINDOW)}")
        pipe = self._client().pipeline(transaction=False)
        pipe.hincrby(key, "r", 1)
        pipe.hget(key, "t")
        pipe.expire(key, 2 * WINDOW)
        requests, tokens, _ = await pipe.execute()
        _judge(self.limits, int(requests), int(tokens or 0), now)

    @_unavailable
    async def charge(self, owner: str, tokens: int) -> None:
        if not self.limits.tokens_per_minute or tokens <= 0:
            return
        key = self._key(owner, f"rl:{int(time.time() // WINDOW)}")
        pipe = self._client().pipeline(transaction=False)
        pipe.hincrby(key, "t", tokens)
        pipe.expire(key, 2 * WINDOW)
        await pipe.execute()

    @_unavailable
    async def open_stream(self, owner: str, stream_id: str) -> None:
        if not self.limits.streams_per_owner:
            return
        admitted = await self._client().eval(
            _OPEN_STREAM,
            1,
            self._key(owner, "streams"),
            time.time(),
            stream_id,
            self.limits.streams_per_owner,
            self.limits.stream_seconds,
        )
        if not admitted:
            raise OwnerStreamLimit(retry_after=1)

    @_unavailable
    async def close_stream(self, owner: str, stream_id: str) -> None:
        if self.limits.streams_per_owner:
            await self._client().zrem(self._key(owner, "streams"), stream_id)

    @_unavailable
    async def forget(self, owner: str) -> None:
        # Only the limiter's own keys: others live under the owner's hash tag too (the session
        # store's index of the owner's sessions, which erasure reads after this).
        client = self._client()
        keys = [k async for k in client.scan_iter(match=self._key(owner, "rl:*"), count=500)]
        await client.delete(*keys, self._key(owner, "streams"))

    async def close(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


@functools.cache
def get_limiter() -> OwnerLimiter:
    limiter: OwnerLimiter = build_adapter(settings.OWNER_LIMITER)
    return limiter


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "OWNER_LIMITER":
        get_limiter.cache_clear()
