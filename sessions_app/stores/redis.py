"""Redis `ActiveSessionStore` and `ArchiverSessionStore`: one hash tag per session, so it also runs on
Redis Cluster.

Keys (prefix `P`):
  P:s:{id}:m   hash: metadata (owner, status, model, prompt, counters, times)
  P:s:{id}:l   list: messages, oldest first, compactly encoded
  P:s:{id}:t   string: the turn lock's token, with a PX expiry
  P:s:{id}:d   list: `seq:message id` of the last `DELETED_IDS_KEPT` deleted messages, newest first
  P:s:{id}:k   list: `key until_ms record` of the last `KEYED_WRITES_KEPT` Idempotency-Keyed
               turns, newest first (`KeyedWrite`: ids and counts, never content)
  P:o:{owner}:i  sorted set (lexicographic): the owner's sessions by creation
  P:{activity:N} sorted set: session id by last activity (ms), for the archiver, in shards
                 (`activity.ActivityIndex`); with one shard, `P:{activity}`
On Redis Cluster (`cluster=True`) each script keeps to one hash tag (one slot); what touches
another (the indexes) is a command of its own, sent beside it to that slot's master.
A turn costs two round trips: one script loads and locks, one script appends and releases
the lock (with another app's `SideWrite`, on one Redis), sent with the commands that touch the
indexes (other hash tags, so not in the script); a third when the append's WAIT comes up short
(`_replicated`). They go by `core.redis_clients`' `run_script` and `round_trip`, not redis-py's
per-command machinery.
Every session key carries a TTL refreshed on each turn, a safety net far longer than the
archiver's threshold.

Longer than the house's ~300 lines on purpose: both ports are one key layout, and every
method leans on the same encoding of it (`_SessionKeys`, the metadata fields the scripts
return); split by port, each half would restate the layout the other must agree with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

import orjson

from core.per_loop import PerLoop
from core.redis_clients import (
    AnyRedis,
    Command,
    Lua,
    WhenBack,
    atomically,
    command,
    connect,
    is_transient,
    on_each_key,
    ping,
    raising,
    round_trip,
    run_script,
    script_replies,
    store_errors,
)
from core.result import Err, Ok, Result
from llm_backend.ports import TokenUsage
from sessions_app import metrics
from sessions_app.domain import (
    ChatMessage,
    ChatSession,
    KeptKeyedWrite,
    KeyedWrite,
    SessionPage,
    SessionStatus,
    Transcript,
    TurnHistory,
)
from sessions_app.errors import (
    MessageNotFound,
    SessionLimitReached,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
)
from sessions_app.ports import DELETED_IDS_KEPT, SessionLookupError, SideWrite
from sessions_app.stores import redis_scripts as lua
from sessions_app.stores.activity import ActivityIndex
from sessions_app.stores.encoding import (
    decode_context,
    decode_cursor,
    decode_messages,
    encode_cursor,
    encode_message,
    from_ms,
    index_member,
    member_session_id,
    to_ms,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


# A stored status to its member without decoding it and asking the enum (0.35 -> 0.05 us).
_STATUS_BY_BYTES = {status.value.encode(): status for status in SessionStatus}


class _SessionKeys(NamedTuple):
    """One session's keys, in the order the scripts take them as KEYS (meta, messages, lock, deleted,
    keyed)."""

    meta: str
    messages: str
    lock: str
    deleted: str
    keyed: str


class RedisSessionStore:
    def __init__(
        self,
        *,
        url: str,
        prefix: str = "gw",
        ttl_seconds: int = 30 * 86400,
        socket_timeout: float = 5.0,
        retries: int = 3,
        max_connections: int = 64,
        release_retry_seconds: float = 600.0,
        cluster: bool = False,
        activity_shards: int = 1,
        wait_replicas: int = 0,
        wait_ms: int = 50,
        wait_retry_ms: int = 1000,
        commit_retry_seconds: float = 0.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._socket_timeout = socket_timeout
        self._retries = retries
        self._max_connections = max_connections
        self._release_retry_seconds = release_retry_seconds  # at least the turn lock's lifetime
        self._cluster = cluster
        # On one Redis a turn's append can carry another app's writes to the same Redis; on a
        # cluster they are in another slot.
        self.side_write_target = None if cluster else f"redis {url}"
        # A turn's reply is sent once its writes reached this many replicas (or `wait_ms` passed,
        # and then `wait_retry_ms` more: see `_replicated`): a master lost right after answering
        # then takes no answered turn with it.
        self._wait: tuple[Command, ...] = (("WAIT", wait_replicas, wait_ms),) if wait_replicas > 0 else ()
        self._wait_replicas = wait_replicas
        self._wait_retry_ms = wait_retry_ms
        self._commit_retry_seconds = commit_retry_seconds
        self._when_back = WhenBack()
        # A client per event loop: see core.per_loop.
        self._connection: PerLoop[AnyRedis] = PerLoop(self._connect, _aclose)
        self._activity = ActivityIndex(
            prefix, shards=activity_shards, client=self._client, meta_key=lambda i: self._session_keys(i).meta
        )

    # -- plumbing -----------------------------------------------------------

    def _connect(self) -> AnyRedis:
        return connect(
            self._url,
            cluster=self._cluster,
            max_connections=self._max_connections,
            timeout=self._socket_timeout,
            retries=self._retries,
        )

    def _client(self) -> AnyRedis:
        return self._connection()

    def _session_keys(self, session_id: str) -> _SessionKeys:
        base = f"{self._prefix}:s:{{{session_id}}}"
        return _SessionKeys(
            meta=f"{base}:m", messages=f"{base}:l", lock=f"{base}:t", deleted=f"{base}:d", keyed=f"{base}:k"
        )

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:i"

    async def _script(self, script: Lua, keys: Sequence[str], args: Sequence[Any], *then: Command) -> Any:
        """Run a script by SHA, and the commands `then` in the same round trip."""
        return await run_script(self._client(), script, keys, args, *then)

    def _session_from(self, session_id: str, meta: Sequence[Any]) -> ChatSession:
        owner, status, model, prompt, metadata, created, last, count, tin, tout, next_seq = meta
        return ChatSession(
            id=session_id,
            owner=owner.decode(),
            status=_STATUS_BY_BYTES.get(status) or SessionStatus(status.decode()),  # built twice a turn
            model=model.decode(),
            system_prompt=prompt.decode(),
            metadata=orjson.loads(metadata),
            created_at=from_ms(created),
            last_activity_at=from_ms(last),
            message_count=int(count),
            usage=TokenUsage(input_tokens=int(tin), output_tokens=int(tout)),
            next_seq=int(count if next_seq is None else next_seq),
        )

    # -- the port -------------------------------------------------------------

    @store_errors
    async def create(self, session: ChatSession, *, max_sessions_per_owner: int) -> Result[None, SessionLimitReached]:
        member = index_member(session.id, session.created_at)
        owner_key = self._owner_key(session.owner)
        reserved = await self._script(lua.RESERVE_SLOT, [owner_key], [max_sessions_per_owner, member, self._ttl])
        if not reserved and await self._prune_owner_index(session.owner):
            reserved = await self._script(lua.RESERVE_SLOT, [owner_key], [max_sessions_per_owner, member, self._ttl])
        if not reserved:
            return Err(SessionLimitReached())
        meta_key = self._session_keys(session.id).meta
        try:
            fields = (word for pair in _meta_fields(session).items() for word in pair)
            commands = [
                ("HSET", meta_key, *fields),
                ("EXPIRE", meta_key, self._ttl),
                ("ZADD", self._activity.key(session.id), to_ms(session.last_activity_at), session.id),
            ]
            raising(await round_trip(self._client(), commands))
        except BaseException:
            await self._client().zrem(owner_key, member)
            raise
        return Ok(None)

    async def _prune_owner_index(self, owner: str) -> bool:
        """Drop index entries whose session is gone (expired or lost); True if any were."""
        owner_key = self._owner_key(owner)
        members = [m.decode() for m in cast(list[bytes], await self._client().zrange(owner_key, 0, -1))]
        # A pipeline, not `on_each_key`: the whole index (up to SESSION_MAX_PER_OWNER entries) in
        # one script would hold Redis for all of it, on a path that is rarely taken.
        pipe = self._client().pipeline(transaction=False)
        for member in members:
            pipe.exists(self._session_keys(member_session_id(member)).meta)
        gone = [m for m, exists in zip(members, await pipe.execute(), strict=True) if not exists]
        if gone:
            await self._client().zrem(owner_key, *gone)
        return bool(gone)

    @store_errors
    async def get(self, session_id: str, *, owner: str) -> Result[ChatSession, SessionNotFound]:
        meta_key = self._session_keys(session_id).meta
        meta = cast(list[bytes | None], await self._client().hmget(meta_key, lua.META_FIELDS))
        if meta[0] is None or meta[0].decode() != owner:
            return Err(SessionNotFound())
        return Ok(self._session_from(session_id, meta))

    @store_errors
    async def load(
        self, session_id: str, *, owner: str, offset: int = 0, limit: int | None = None, from_seq: int | None = None
    ) -> Result[Transcript, SessionNotFound]:
        if from_seq is not None:
            return await self._load_from(session_id, owner, from_seq, limit)
        keys = self._session_keys(session_id)
        meta_key, messages_key = keys.meta, keys.messages
        meta, raw_messages = await atomically(
            self._client(),
            [meta_key, messages_key],
            [
                ("HMGET", meta_key, *lua.META_FIELDS),
                ("LRANGE", messages_key, offset, -1 if limit is None else offset + limit - 1),
            ],
        )
        if meta[0] is None or meta[0].decode() != owner:
            return Err(SessionNotFound())
        return Ok(Transcript(self._session_from(session_id, meta), decode_messages(raw_messages, offset)))

    async def _load_from(
        self, session_id: str, owner: str, from_seq: int, limit: int | None
    ) -> Result[Transcript, SessionNotFound]:
        keys = self._session_keys(session_id)
        reply = await self._script(
            lua.LOAD_FROM, [keys.meta, keys.messages], [owner, from_seq, -1 if limit is None else limit]
        )
        if reply[0] != b"ok":
            return Err(SessionNotFound())
        messages = [m for m in decode_messages(reply[3], int(reply[2])) if cast(int, m.seq) >= from_seq]
        return Ok(Transcript(self._session_from(session_id, reply[1]), tuple(messages[:limit])))

    @store_errors
    async def begin_turn(
        self,
        session_id: str,
        *,
        owner: str,
        token: str,
        lock_seconds: float,
        history_limit: int,
        key: str | None = None,
    ) -> Result[TurnHistory, SessionLookupError]:
        reply = await self._script(
            lua.BEGIN_TURN,
            self._session_keys(session_id),
            [owner, token, int(lock_seconds * 1000), history_limit, key or "", to_ms(datetime.now(UTC))],
        )
        match reply[0]:
            case b"ok":
                return Ok(TurnHistory(self._session_from(session_id, reply[1]), *decode_context(reply[2])))
            case b"answered":
                return Ok(TurnHistory(self._session_from(session_id, reply[1]), (), None, answered=reply[2]))
            case b"not_active":
                return Err(SessionNotActive())
            case b"busy":
                return Err(TurnInProgress())
        return Err(SessionNotFound())

    @store_errors
    async def append_turn(
        self,
        session_id: str,
        *,
        owner: str,
        token: str,
        messages: Sequence[ChatMessage],
        usage: TokenUsage,
        at: datetime,
        keyed: KeyedWrite | None = None,
        side: SideWrite | None = None,
    ) -> Result[ChatSession, SessionNotFound | TurnInProgress]:
        at_ms = to_ms(at)
        written = _keyed_entry(keyed) if keyed is not None else b""
        keys: Sequence[str] = self._session_keys(session_id)
        side_words: list[Any] = []
        if side is not None:
            keys = (*keys, *side.keys)
            side_words = [word for each in side.commands for word in (len(each), *each)]
        replies = await self._resent_until_answered(
            lambda: script_replies(
                self._client(),
                lua.APPEND_TURN,
                keys,
                [
                    token,
                    self._ttl,
                    at_ms,
                    usage.input_tokens,
                    usage.output_tokens,
                    written,
                    len(side_words),
                    *side_words,
                    *map(_unsequenced, messages),
                ],
                *self._wait,  # on the script's connection: its writes
                ("ZADD", self._activity.key(session_id), "XX", at_ms, session_id),
                ("EXPIRE", self._owner_key(owner), self._ttl),
            )
        )
        reply = replies[0]
        match reply[0]:
            case b"ok":
                if self._wait:
                    await self._replicated(session_id, acknowledged=replies[1])
                return Ok(self._session_from(session_id, reply[1]))
            case b"lost":
                return Err(TurnInProgress("The turn lost its lock before its reply was stored."))
        return Err(SessionNotFound())

    async def _replicated(self, session_id: str, *, acknowledged: int) -> None:
        """Wait once more, up to `wait_retry_ms`, for a stored turn that fewer than `wait_replicas`
        replicas acknowledged within `wait_ms`. Still short, it is answered all the same (its master
        holds it; refusing it would make a lagging replica an outage), counted and logged: it is
        lost if its master dies before replicating it.

        A WAIT waits for its own connection's writes, and the append's connection is back in the
        pool: so this WAIT follows a write of its own to the session's slot, on the same connection
        (the metadata's TTL set again). Replication keeps order: a replica that has that write has
        the turn's."""
        if acknowledged >= self._wait_replicas:
            return
        if self._wait_retry_ms > 0:  # WAIT 0 would block for good
            again = [
                ("EXPIRE", self._session_keys(session_id).meta, self._ttl),
                ("WAIT", self._wait_replicas, self._wait_retry_ms),
            ]
            try:
                acknowledged = raising(await round_trip(self._client(), again))[1]
            except Exception as exc:
                # The turn is stored and its reply due: an unreachable master leaves it unconfirmed.
                if not is_transient(exc):
                    raise
        if acknowledged >= self._wait_replicas:
            return
        metrics.UNREPLICATED_WRITES.inc()
        logger.warning(
            "turn answered before reaching a replica (%d of %d acknowledged) session_id=%s",
            acknowledged,
            self._wait_replicas,
            session_id,
        )

    async def _resent_until_answered(self, send: Callable[[], Awaitable[T]]) -> T:
        """Send a turn's append again while Redis is unreachable, for up to `commit_retry_seconds`.

        A master killed between running the append and answering leaves its outcome unknown,
        and its replica, promoted, may hold it. Reported as failed, the turn would be stored a
        second time by the client's retry. Sent again, APPEND_TURN finds it done (its lock gone,
        its last message there) and answers ok, or stores it now, once: so the append is resent
        over a failover's length before the failure is reported."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._commit_retry_seconds
        delay = 0.1
        while True:
            try:
                return await send()
            except Exception as exc:
                if not is_transient(exc) or loop.time() + delay > deadline:
                    raise
                logger.warning("turn append unanswered (%s); sending it again", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)

    @store_errors
    async def keyed_write(self, session_id: str, *, owner: str, key: str) -> bytes | None:
        keys = self._session_keys(session_id)
        record = await self._script(lua.KEYED_WRITE, [keys.meta, keys.keyed], [owner, key, to_ms(datetime.now(UTC))])
        return cast(bytes | None, record)

    @store_errors
    async def keyed_writes(self, session_id: str, *, owner: str) -> tuple[KeptKeyedWrite, ...]:
        keys = self._session_keys(session_id)
        stored_owner, entries = await atomically(
            self._client(), [keys.meta, keys.keyed], [("HGET", keys.meta, "o"), ("LRANGE", keys.keyed, 0, -1)]
        )
        if stored_owner is None or stored_owner.decode() != owner:
            return ()
        return tuple(map(_kept_keyed_write, entries))

    @store_errors
    async def extend_turn(self, session_id: str, *, token: str, lock_seconds: float) -> bool:
        extended = await self._script(
            lua.EXTEND_TURN, [self._session_keys(session_id).lock], [token, int(lock_seconds * 1000)]
        )
        return bool(extended)

    async def release_turn(self, session_id: str, *, token: str) -> None:
        await self._when_back.run(
            f"turn lock release session_id={session_id}",
            lambda: self._release(session_id, token),
            give_up_after=self._release_retry_seconds,
        )

    @store_errors
    async def _release(self, session_id: str, token: str) -> None:
        await self._script(lua.RELEASE_TURN, [self._session_keys(session_id).lock], [token])

    @store_errors
    async def set_status(
        self, session_id: str, *, owner: str, status: SessionStatus, at: datetime
    ) -> Result[ChatSession, SessionNotFound | TurnInProgress]:
        keys = self._session_keys(session_id)
        meta_key, lock_key = keys.meta, keys.lock
        at_ms = to_ms(at)
        reply = await self._script(
            lua.SET_STATUS,
            [meta_key, lock_key],
            [owner, status.value, at_ms],
            ("ZADD", self._activity.key(session_id), "XX", at_ms, session_id),
        )
        match reply[0]:
            case b"ok":
                return Ok(self._session_from(session_id, reply[1]))
            case b"busy":
                return Err(TurnInProgress())
        return Err(SessionNotFound())

    @store_errors
    async def lock_for_archive(
        self, session_id: str, *, token: str, lock_seconds: float
    ) -> Result[Transcript, SessionNotFound | TurnInProgress]:
        reply = await self._script(
            lua.LOCK_FOR_ARCHIVE, self._session_keys(session_id), [token, int(lock_seconds * 1000)]
        )
        match reply[0]:
            case b"ok":
                session = self._session_from(session_id, reply[1])
                return Ok(Transcript(session, decode_messages(reply[2], 0)))
            case b"busy":
                return Err(TurnInProgress())
        return Err(SessionNotFound())

    @store_errors
    async def delete_locked(self, session_id: str, *, token: str) -> bool:
        deleted = await self._script(lua.DELETE_LOCKED, self._session_keys(session_id), [token])
        if not deleted:
            return False
        owner, created = deleted
        pipe = self._client().pipeline(transaction=False)
        pipe.zrem(self._owner_key(owner.decode()), index_member(session_id, from_ms(created)))
        pipe.zrem(self._activity.key(session_id), session_id)
        await pipe.execute()
        return True

    @store_errors
    async def restore(
        self, transcript: Transcript, *, max_sessions_per_owner: int
    ) -> Result[bool, SessionLimitReached]:
        transcript = transcript.sequenced()
        session = transcript.session
        owner_key = self._owner_key(session.owner)
        member = index_member(session.id, session.created_at)
        reserved = await self._script(lua.RESERVE_SLOT, [owner_key], [max_sessions_per_owner, member, self._ttl])
        if not reserved and await self._prune_owner_index(session.owner):
            reserved = await self._script(lua.RESERVE_SLOT, [owner_key], [max_sessions_per_owner, member, self._ttl])
        if not reserved:
            return Err(SessionLimitReached())
        meta = {k: v.decode() if isinstance(v, bytes) else v for k, v in _meta_fields(session).items()}
        keys = self._session_keys(session.id)
        created = await self._script(
            lua.RESTORE,
            [keys.meta, keys.messages],
            [self._ttl, orjson.dumps(meta), *map(encode_message, transcript.messages)],
        )
        await self._client().zadd(self._activity.key(session.id), {session.id: to_ms(session.last_activity_at)})
        return Ok(bool(created))

    @store_errors
    async def list_by_owner(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        owner_key = self._owner_key(owner)
        start = "(" + decode_cursor(cursor) if cursor else "+"
        raw = await command(self._client(), "ZRANGE", owner_key, start, "-", "BYLEX", "REV", "LIMIT", 0, limit + 1)
        members = [m.decode() for m in cast(list[bytes], raw)]
        page, more = members[:limit], len(members) > limit
        metas = await on_each_key(
            self._client(), "HMGET", [self._session_keys(member_session_id(m)).meta for m in page], *lua.META_FIELDS
        )
        sessions, gone = [], []
        for member, meta in zip(page, metas, strict=True):
            # An owner-index entry may outlive its session (TTL safety net); skip and tidy it.
            if meta[0] is None or meta[0].decode() != owner:
                gone.append(member)
            else:
                sessions.append(self._session_from(member_session_id(member), meta))
        if gone:
            await self._client().zrem(owner_key, *gone)
        return SessionPage(sessions=tuple(sessions), next_cursor=encode_cursor(page[-1]) if more else None)

    @store_errors
    async def list_idle(self, *, before: datetime, limit: int) -> list[str]:
        return await self._activity.list_idle(before_ms=to_ms(before), limit=limit)

    @store_errors
    async def count_idle(self, *, before: datetime) -> int:
        # Entries of vanished sessions count too until a pass meets them: a pass that never
        # comes is what this number is for.
        return await self._activity.count_idle(before_ms=to_ms(before))

    @store_errors
    async def delete(self, session_id: str, *, owner: str) -> Result[None, SessionNotFound]:
        created = await self._script(lua.DELETE, self._session_keys(session_id), [owner])
        if created is None:
            return Err(SessionNotFound())
        pipe = self._client().pipeline(transaction=False)
        pipe.zrem(self._owner_key(owner), index_member(session_id, from_ms(created)))
        pipe.zrem(self._activity.key(session_id), session_id)
        await pipe.execute()
        return Ok(None)

    @store_errors
    async def set_metadata(
        self, session_id: str, *, owner: str, metadata: Mapping[str, Any], at: datetime
    ) -> Result[ChatSession, SessionNotFound]:
        keys = self._session_keys(session_id)
        reply = await self._script(lua.SET_METADATA, [keys.meta], [owner, orjson.dumps(metadata), to_ms(at)])
        if reply[0] != b"ok":
            return Err(SessionNotFound())
        await self._client().zadd(self._activity.key(session_id), {session_id: to_ms(at)}, xx=True)
        return Ok(self._session_from(session_id, reply[1]))

    @store_errors
    async def delete_message(
        self, session_id: str, *, owner: str, message_id: str, at: datetime
    ) -> Result[ChatSession, SessionNotFound | MessageNotFound | TurnInProgress]:
        reply = await self._script(
            lua.DELETE_MESSAGE, self._session_keys(session_id), [owner, message_id, to_ms(at), DELETED_IDS_KEPT]
        )
        match reply[0]:
            case b"ok":
                await self._client().zadd(self._activity.key(session_id), {session_id: to_ms(at)}, xx=True)
                return Ok(self._session_from(session_id, reply[1]))
            case b"busy":
                return Err(TurnInProgress())
            case b"no_message":
                return Err(MessageNotFound())
        return Err(SessionNotFound())

    @store_errors
    async def deleted_message_seq(self, session_id: str, *, owner: str, message_id: str) -> int | None:
        keys = self._session_keys(session_id)
        seq = await self._script(lua.DELETED_SEQ, [keys.meta, keys.deleted], [owner, message_id])
        return None if seq is None else int(seq)

    @store_errors
    async def ping(self) -> None:
        await ping(self._client())

    @store_errors
    async def count_active(self) -> int:
        return await self._activity.count()

    async def close(self) -> None:
        self._when_back.cancel()  # the locks lapse by themselves
        await self._connection.close()


async def _aclose(client: AnyRedis) -> None:
    await client.aclose()


def _meta_fields(session: ChatSession) -> dict[str, str | int | bytes]:
    return {
        "o": session.owner,
        "s": session.status.value,
        "md": session.model,
        "sp": session.system_prompt,
        "mt": orjson.dumps(dict(session.metadata)),
        "ca": to_ms(session.created_at),
        "la": to_ms(session.last_activity_at),
        "n": session.message_count,
        "ti": session.usage.input_tokens,
        "to": session.usage.output_tokens,
        "q": session.next_seq,
    }


def _keyed_entry(keyed: KeyedWrite) -> bytes:
    """A keyed write as APPEND_TURN stores it: `key until_ms record`."""
    until = to_ms(datetime.now(UTC)) + keyed.ttl_seconds * 1000
    return f"{keyed.key} {until} ".encode() + keyed.record


def _kept_keyed_write(entry: bytes) -> KeptKeyedWrite:
    """A keyed write as APPEND_TURN stored it (see `_keyed_entry`)."""
    key, until, record = entry.split(b" ", 2)
    return KeptKeyedWrite(key.decode(), record, from_ms(until))


def _unsequenced(message: ChatMessage) -> bytes:
    """A message to append, without a seq: APPEND_TURN writes the session's next one into it."""
    return encode_message(message if message.seq is None else dataclasses.replace(message, seq=None))
