"""The Redis adapter of `OwnerLimiter`: counts under the owner's hash tag, shared by every instance."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from core.errors import StoreUnavailable
from core.redis_clients import LoopClients, Lua, command, run_script, store_errors
from limits.errors import OwnerSocketLimit, OwnerStreamLimit
from limits.policy import WINDOW, Limits, judge, owner_counts

# One round trip: add this process's unsent counts to the owner's minute, read the totals,
# set the window's expiry.
_ADD = Lua("""
local requests = redis.call('HINCRBY', KEYS[1], 'r', ARGV[1])
local tokens = redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {requests, tokens}
""")

# Count a member (a stream, a WebSocket) in the owner's set, unless the set is full; a member
# counted already is kept (its time renewed) whatever the count.
_OPEN_MEMBER = Lua("""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[4])
if tonumber(ARGV[3]) > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[2])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
""")


@dataclass(slots=True)
class _Tally:
    """One owner's minute as this process sees it: the totals of every instance at the last
    sync, plus what this process counted since and has not sent yet."""

    window: int
    requests: int = 0
    tokens: int = 0
    unsent_requests: int = 0
    unsent_tokens: int = 0
    synced_at: float = float("-inf")
    syncing: bool = False


class RedisLimiter:
    """Counts in Redis under the owner's hash tag, shared by every instance.

    With `sync_seconds` 0 each request is one round trip and the limits are exact. With more,
    each process counts locally and adds its counts to Redis (reading everyone's totals back)
    at most that often per owner, in the background: no round trip on the request's path, and
    the instances together may overshoot a limit by what they admit in one such interval
    (the same trade as Kong's `sync_rate`).
    """

    def __init__(
        self,
        *,
        url: str,
        prefix: str = "gw",
        max_connections: int = 32,
        sync_seconds: float = 0.0,
        cluster: bool = False,
        **limits: int,
    ) -> None:
        self.limits = Limits(**limits)
        self._prefix = prefix
        self._client = LoopClients(url, max_connections=max_connections, cluster=cluster)
        self._sync_seconds = sync_seconds
        self._tallies: dict[str, _Tally] = {}
        self._syncs: set[asyncio.Task[None]] = set()

    def _key(self, owner: str, suffix: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:{suffix}"

    def _tally(self, owner: str, now: float) -> _Tally:
        window = int(now // WINDOW)
        tally = self._tallies.get(owner)
        if tally is None or tally.window != window:
            if tally is None and len(self._tallies) > 10_000:  # forget owners from past minutes
                self._tallies = {o: t for o, t in self._tallies.items() if t.window == window}
            tally = self._tallies[owner] = _Tally(window)
        return tally

    async def admit(self, owner: str) -> None:
        if not (self.limits.requests_per_minute or self.limits.tokens_per_minute):
            return
        now = time.time()
        tally = self._tally(owner, now)
        tally.unsent_requests += 1
        await self._sync_if_due(owner, tally, now)
        judge(self.limits, tally.requests + tally.unsent_requests, tally.tokens + tally.unsent_tokens, now)

    async def charge(self, owner: str, tokens: int) -> None:
        if not self.limits.tokens_per_minute or tokens <= 0:
            return
        now = time.time()
        tally = self._tally(owner, now)
        tally.unsent_tokens += tokens
        await self._sync_if_due(owner, tally, now)

    async def _sync_if_due(self, owner: str, tally: _Tally, now: float) -> None:
        if not self._sync_seconds:
            await self._sync(owner, tally)  # exact: every count goes to Redis at once
        elif now - tally.synced_at >= self._sync_seconds and not tally.syncing:
            task = asyncio.create_task(self._sync_quietly(owner, tally))
            self._syncs.add(task)
            task.add_done_callback(self._syncs.discard)

    @store_errors
    async def _sync(self, owner: str, tally: _Tally) -> None:
        requests, tokens = tally.unsent_requests, tally.unsent_tokens
        tally.unsent_requests = tally.unsent_tokens = 0
        tally.syncing = True
        try:
            key = self._key(owner, f"rl:{tally.window}")
            totals = await run_script(self._client(), _ADD, [key], [requests, tokens, 2 * WINDOW])
        except BaseException:
            tally.unsent_requests += requests  # to be sent with the next sync
            tally.unsent_tokens += tokens
            raise
        finally:
            tally.syncing = False
        tally.requests, tally.tokens = int(totals[0]), int(totals[1])
        tally.synced_at = time.time()

    async def _sync_quietly(self, owner: str, tally: _Tally) -> None:
        with contextlib.suppress(StoreUnavailable):  # counted locally meanwhile; sent with the next sync
            await self._sync(owner, tally)

    async def flush(self) -> None:
        """Send every unsent count now (at shutdown; tests)."""
        for task in list(self._syncs):
            await task
        for owner, tally in list(self._tallies.items()):
            if tally.unsent_requests or tally.unsent_tokens:
                await self._sync_quietly(owner, tally)

    @store_errors
    async def open_stream(self, owner: str, stream_id: str) -> None:
        if not await self._open_member(
            owner, "streams", stream_id, cap=self.limits.streams_per_owner, seconds=self.limits.stream_seconds
        ):
            raise OwnerStreamLimit(retry_after=1)

    @store_errors
    async def close_stream(self, owner: str, stream_id: str) -> None:
        if self.limits.streams_per_owner:
            await command(self._client(), "ZREM", self._key(owner, "streams"), stream_id)

    @store_errors
    async def open_socket(self, owner: str, socket_id: str) -> None:
        if not await self._open_member(
            owner, "sockets", socket_id, cap=self.limits.sockets_per_owner, seconds=self.limits.socket_seconds
        ):
            raise OwnerSocketLimit(retry_after=1)

    async def _open_member(self, owner: str, kind: str, member: str, *, cap: int, seconds: int) -> bool:
        """Add `member` to the owner's set of open `kind` unless `cap` are open (0: no cap, nothing
        counted); entries not renewed within `seconds` lapse, so a dead instance's go by themselves."""
        if not cap:
            return True
        admitted = await run_script(
            self._client(), _OPEN_MEMBER, [self._key(owner, kind)], [time.time(), member, cap, seconds]
        )
        return bool(admitted)

    @store_errors
    async def close_socket(self, owner: str, socket_id: str) -> None:
        if self.limits.sockets_per_owner:
            await self._client().zrem(self._key(owner, "sockets"), socket_id)

    @store_errors
    async def forget(self, owner: str) -> None:
        self._tallies.pop(owner, None)
        # Only the limiter's own keys: others live under the owner's hash tag too (the session index).
        client = self._client()
        keys = [k async for k in client.scan_iter(match=self._key(owner, "rl:*"), count=500)]
        await client.delete(*keys, self._key(owner, "streams"), self._key(owner, "sockets"))

    @store_errors
    async def describe(self, owner: str) -> dict[str, int]:
        now = time.time()
        pipe = self._client().pipeline(transaction=False)
        pipe.hmget(self._key(owner, f"rl:{int(now // WINDOW)}"), ["r", "t"])
        pipe.zcount(self._key(owner, "streams"), now - self.limits.stream_seconds, "+inf")
        pipe.zcount(self._key(owner, "sockets"), now - self.limits.socket_seconds, "+inf")
        (requests, tokens), streams, sockets = await pipe.execute()
        tally = self._tallies.get(owner)
        if tally is None or tally.window != int(now // WINDOW):
            tally = _Tally(int(now // WINDOW))  # nothing unsent
        return owner_counts(
            int(requests or 0) + tally.unsent_requests,
            int(tokens or 0) + tally.unsent_tokens,
            int(streams),
            int(sockets),
        )

    async def close(self) -> None:
        await self.flush()
        await self._client.close()
