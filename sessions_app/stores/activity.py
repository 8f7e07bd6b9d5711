"""The Redis store's activity index: session id by last activity (ms), which the archiver scans
for idle sessions, spread over shards so that on a Redis Cluster no one key takes every turn.

A session's entry lives in shard CRC-32(id) mod `shards`, key `P:{activity:N}`; with one shard
the key is `P:{activity}`, the layout from before sharding, whose entries a sharded index moves
to their shards when it is first scanned. The index and the sessions have different hash tags
(slots), so nothing here is one script with a session's keys: the session's own record (`la`
in its metadata) is the truth the index is mended from."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from typing import cast

from core.redis_clients import AnyRedis

logger = logging.getLogger(__name__)


class ActivityIndex:
    def __init__(
        self, prefix: str, *, shards: int, client: Callable[[], AnyRedis], meta_key: Callable[[str], str]
    ) -> None:
        self._prefix = prefix
        self._shards = max(1, shards)
        self._client = client
        self._meta_key = meta_key  # a session's metadata hash, whose `la` is its last activity

    def key(self, session_id: str) -> str:
        """The shard that holds `session_id`."""
        if self._shards == 1:
            return self._unsharded()
        return f"{self._prefix}:{{activity:{zlib.crc32(session_id.encode()) % self._shards}}}"

    def _unsharded(self) -> str:
        return f"{self._prefix}:{{activity}}"

    def _keys(self) -> list[str]:
        """Every shard; with shards, the unsharded key too (until `list_idle` has emptied it)."""
        if self._shards == 1:
            return [self._unsharded()]
        return [*(f"{self._prefix}:{{activity:{n}}}" for n in range(self._shards)), self._unsharded()]

    async def list_idle(self, *, before_ms: int, limit: int) -> list[str]:
        """The ids of the `limit` sessions idle longest, all quiet since before `before_ms`."""
        client = self._client()
        if self._shards > 1:
            await self._shard_unsharded_entries()
        while True:
            # The oldest `limit` of each shard, merged: the oldest `limit` of them all.
            pipe = client.pipeline(transaction=False)
            for key in self._keys():
                pipe.zrange(key, "-inf", f"({before_ms}", byscore=True, offset=0, num=limit, withscores=True)
            listed = [entry for shard in await pipe.execute() for entry in cast(list[tuple[bytes, float]], shard)]
            ids = [member.decode() for member, _ in sorted(listed, key=lambda entry: entry[1])[:limit]]
            pipe = client.pipeline(transaction=False)
            for session_id in ids:
                pipe.exists(self._meta_key(session_id))
            gone = [i for i, exists in zip(ids, await pipe.execute() if ids else [], strict=True) if not exists]
            if not gone:
                return ids
            # Entries of sessions that vanished (TTL, a delete cut short) would otherwise sit at the
            # oldest end for ever, ahead of every real idle session. Each round drops some, so it ends.
            await self._drop(gone)

    async def count_idle(self, *, before_ms: int) -> int:
        pipe = self._client().pipeline(transaction=False)
        for key in self._keys():
            pipe.zcount(key, "-inf", f"({before_ms}")
        return sum(int(count) for count in await pipe.execute())

    async def count(self) -> int:
        pipe = self._client().pipeline(transaction=False)
        for key in self._keys():
            pipe.zcard(key)
        return sum(int(count) for count in await pipe.execute())

    async def _drop(self, session_ids: list[str]) -> None:
        """Remove the entries of sessions found missing, never one whose session exists.

        No script can check and remove at once (other slots). A create or restore of one of
        them may have run since the check: it writes the session first, then its index entry.
        So remove, then look again and put back any whose session is there now; its own ZADD,
        if later, wins.
        """
        pipe = self._client().pipeline(transaction=False)
        for session_id in session_ids:
            pipe.zrem(self.key(session_id), session_id)
            if self._shards > 1:
                pipe.zrem(self._unsharded(), session_id)
        await pipe.execute()
        back = await self._reindex(session_ids, nx=True)
        logger.info("dropped %d activity-index entries of vanished sessions", len(session_ids) - back)

    async def _reindex(self, session_ids: Sequence[str], *, nx: bool = False) -> int:
        """Index each of `session_ids` whose session exists, in its shard, at its last activity
        (only if not indexed there with `nx`; else only if later than what is there, so a turn's
        own later ZADD is never undone). How many sessions exist."""
        client = self._client()
        pipe = client.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hget(self._meta_key(session_id), "la")
        found = {i: int(la) for i, la in zip(session_ids, await pipe.execute(), strict=True) if la is not None}
        if found:
            pipe = client.pipeline(transaction=False)
            for session_id, la in found.items():
                pipe.zadd(self.key(session_id), {session_id: la}, nx=nx, gt=not nx)
            await pipe.execute()
        return len(found)

    async def _shard_unsharded_entries(self, batch: int = 500) -> None:
        """Move entries of the unsharded key to their shards, at the last activity their session
        records. A turn that ends meanwhile finds no entry in its shard to update (its ZADD is
        XX), so the move reads the time again after taking the entry out, and keeps the later."""
        client = self._client()
        unsharded = self._unsharded()
        while raw := cast(list[bytes], await client.zrange(unsharded, 0, batch - 1)):
            ids = [member.decode() for member in raw]
            await self._reindex(ids)
            await client.zrem(unsharded, *ids)
            moved = await self._reindex(ids)
            logger.info("moved %d activity-index entries to their shards", moved)
