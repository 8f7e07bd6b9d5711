"""The `OwnerGate` adapters (in process, and in Redis for every process), and the closing that
erasure and key destruction hold while they work."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from archive.errors import OwnerBusy
from archive.ports import OwnerGate
from core.redis_clients import LoopClients, store_errors


class MemoryOwnerGate:
    """One process's gate: the embedded default (the in-process store has one process)."""

    def __init__(self) -> None:
        self._inside: dict[str, dict[str, float]] = {}
        self._closed: dict[str, tuple[str, float]] = {}

    def _live(self, owner: str, now: float) -> dict[str, float]:
        inside = self._inside.setdefault(owner, {})
        for token in [t for t, until in inside.items() if until <= now]:
            del inside[token]
        return inside

    def _closer(self, owner: str, now: float) -> str | None:
        closed = self._closed.get(owner)
        return closed[0] if closed is not None and closed[1] > now else None

    async def enter(self, owner: str, token: str, *, hold_seconds: float) -> bool:
        now = time.monotonic()
        if self._closer(owner, now) is not None:
            return False
        self._live(owner, now)[token] = now + hold_seconds
        return True

    async def leave(self, owner: str, token: str) -> bool:
        inside = self._inside.get(owner, {})
        until = inside.pop(token, None)
        if not inside:
            self._inside.pop(owner, None)
        return until is not None and until > time.monotonic()

    async def close(self, owner: str, token: str, *, hold_seconds: float) -> int:
        now = time.monotonic()
        if self._closer(owner, now) not in {None, token}:
            return -1
        self._closed[owner] = (token, now + hold_seconds)
        return len(self._live(owner, now))

    async def reopen(self, owner: str, token: str) -> None:
        if self._closer(owner, time.monotonic()) == token:
            del self._closed[owner]

    async def close_connections(self) -> None:
        pass


# Times are Redis's own (TIME), so processes with drifting clocks agree on what has lapsed.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: closed, inside. ARGV: token, hold_ms.
_ENTER = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""
)

# KEYS: inside. ARGV: token.
_LEAVE = (
    _NOW
    + """
local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if until_ms and tonumber(until_ms) > now then return 1 end
return 0
"""
)

# KEYS: closed, inside. ARGV: token, hold_ms.
_CLOSE = (
    _NOW
    + """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return redis.call('ZCARD', KEYS[2])
"""
)

# KEYS: closed. ARGV: token.
_REOPEN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisOwnerGate:
    """A reader-writer lock per owner in Redis, under the owner's hash tag (Redis Cluster):
    `P:o:{owner}:gate:in` (sorted set: token by lapse time) and `P:o:{owner}:gate:closed`
    (the closer's token, with a PX expiry). Entering and closing are each one script, so an
    archive either entered before the closing (and the closer waits for it) or is refused."""

    def __init__(self, *, url: str, prefix: str = "gw", cluster: bool = False) -> None:
        self._prefix = prefix
        self._client = LoopClients(url, max_connections=8, cluster=cluster)

    def _keys(self, owner: str) -> tuple[str, str]:
        base = f"{self._prefix}:o:{{{owner}}}:gate"
        return f"{base}:closed", f"{base}:in"

    @store_errors
    async def enter(self, owner: str, token: str, *, hold_seconds: float) -> bool:
        return bool(await self._client().eval(_ENTER, 2, *self._keys(owner), token, _ms(hold_seconds)))

    @store_errors
    async def leave(self, owner: str, token: str) -> bool:
        return bool(await self._client().eval(_LEAVE, 1, self._keys(owner)[1], token))

    @store_errors
    async def close(self, owner: str, token: str, *, hold_seconds: float) -> int:
        return int(await self._client().eval(_CLOSE, 2, *self._keys(owner), token, _ms(hold_seconds)))

    @store_errors
    async def reopen(self, owner: str, token: str) -> None:
        await self._client().eval(_REOPEN, 1, self._keys(owner)[0], token)

    async def close_connections(self) -> None:
        await self._client.close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@contextlib.asynccontextmanager
async def owner_closed(gate: OwnerGate, owner: str, *, wait: float, hold_seconds: float) -> AsyncIterator[None]:
    """Hold the owner closed for the block: no archive or resume of theirs starts, and those
    under way have finished before it begins. Waits at most `wait` seconds for them, then
    raises `OwnerBusy` (the client retries) rather than hanging. The closing is renewed while
    the block runs, and lapses after `hold_seconds` should this process die."""
    token = secrets.token_urlsafe(16)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.01
    try:
        while await gate.close(owner, token, hold_seconds=hold_seconds) != 0:
            if loop.time() >= deadline:
                raise OwnerBusy()
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.25)
        renewing = asyncio.create_task(_renew(gate, owner, token, hold_seconds))
        try:
            yield
        finally:
            renewing.cancel()
    finally:
        await gate.reopen(owner, token)


async def _renew(gate: OwnerGate, owner: str, token: str, hold_seconds: float) -> None:
    while True:
        await asyncio.sleep(hold_seconds / 3)
        with contextlib.suppress(Exception):  # a failed renewal is tried again; the hold is long
            await gate.close(owner, token, hold_seconds=hold_seconds)
