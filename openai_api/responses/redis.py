"""The Redis `ResponseStore`: one key per record under its owner's hash tag, with a set per
session and an index per owner written in the same step (one script), so a session's or an owner's
records are found without scanning Redis."""

from __future__ import annotations

import time
from typing import Any, cast

import orjson

from core.redis_clients import Command, LoopClients, atomically, store_errors
from openai_api.responses.records import ResponseRecord, described
from sessions_app.public import SideWrite


class RedisResponseStore:
    def __init__(self, *, url: str, prefix: str = "gw", cluster: bool = False) -> None:
        self._prefix = prefix
        self._client = LoopClients(url, cluster=cluster)
        # As `RedisSessionStore`'s: on one Redis a record rides its turn's append; on a cluster
        # its keys (the owner's slot) are not the turn's (the session's).
        self.side_write_target = None if cluster else f"redis {url}"

    # Every key of an owner shares the `{owner}` hash tag: one slot, so one script
    # can write them together on a cluster.
    def _record_key(self, owner: str, response_id: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:resp:{response_id}"

    def _session_key(self, owner: str, session_id: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:respsess:{session_id}"

    def _index_key(self, owner: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:respidx"

    async def _atomically(self, keys: list[str], *commands: Command) -> list[Any]:
        """The commands as one step (all keys under the owner's hash tag: one slot)."""
        replies = await atomically(self._client(), keys, commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    @store_errors
    async def save(self, record: ResponseRecord, *, ttl: int) -> None:
        keys, commands = self._saving(record, ttl)
        await self._atomically(list(keys), *commands)

    def side_write(self, record: ResponseRecord, *, ttl: int) -> SideWrite:
        keys, commands = self._saving(record, ttl)
        return SideWrite(keys=keys, commands=commands)

    def _saving(self, record: ResponseRecord, ttl: int) -> tuple[tuple[str, ...], tuple[Command, ...]]:
        """The keys and commands that save `record`."""
        owner, now = record.owner, int(time.time())
        key, session_key, index_key = (
            self._record_key(owner, record.id),
            self._session_key(owner, record.session_id),
            self._index_key(owner),
        )
        return (key, session_key, index_key), (
            ("SET", key, orjson.dumps(record.to_json()), "EX", ttl),
            ("SADD", session_key, record.id),
            ("EXPIRE", session_key, ttl),  # the newest record lasts longest
            ("ZREMRANGEBYSCORE", index_key, "-inf", now),
            ("ZADD", index_key, now + ttl, record.id),
            ("EXPIRE", index_key, ttl),
        )

    @store_errors
    async def get(self, response_id: str, *, owner: str) -> ResponseRecord | None:
        raw = await self._client().get(self._record_key(owner, response_id))
        return None if raw is None else ResponseRecord.from_json(owner, orjson.loads(raw))

    @store_errors
    async def delete(self, response_id: str, *, owner: str) -> bool:
        record = await self.get(response_id, owner=owner)
        if record is None:
            return False
        key, session_key, index_key = (
            self._record_key(owner, response_id),
            self._session_key(owner, record.session_id),
            self._index_key(owner),
        )
        deleted, *_ = await self._atomically(
            [key, session_key, index_key],
            ("DEL", key),
            ("SREM", session_key, response_id),
            ("ZREM", index_key, response_id),
        )
        return bool(deleted)

    @store_errors
    async def forget_session(self, owner: str, session_id: str) -> None:
        client = self._client()
        ids = [
            member.decode() for member in cast(set[bytes], await client.smembers(self._session_key(owner, session_id)))
        ]
        records = [self._record_key(owner, i) for i in ids]
        session_key, index_key = self._session_key(owner, session_id), self._index_key(owner)
        commands: list[Command] = [("DEL", *records), ("ZREM", index_key, *ids)] if ids else []
        await self._atomically([*records, index_key, session_key], *commands, ("DEL", session_key))

    @store_errors
    async def forget(self, owner: str) -> None:
        # A scan, not only the index: it finds every record, set and index of the owner's.
        client = self._client()
        keys = [k async for k in client.scan_iter(match=f"{self._prefix}:o:{{{owner}}}:resp*", count=500)]
        if keys:
            await client.delete(*keys)

    @store_errors
    async def describe(self, owner: str) -> list[dict[str, Any]]:
        client, now = self._client(), time.time()
        members = cast(
            list[tuple[bytes, float]], await client.zrangebyscore(self._index_key(owner), now, "+inf", withscores=True)
        )
        if not members:
            return []
        raws = cast(list[bytes | None], await client.mget([self._record_key(owner, m.decode()) for m, _ in members]))
        found = [
            described(ResponseRecord.from_json(owner, orjson.loads(raw)), until - now)
            for raw, (_, until) in zip(raws, members, strict=True)
            if raw is not None
        ]
        return sorted(found, key=lambda d: (d["created_at"], d["response_id"]))

    async def close(self) -> None:
        await self._client.close()
