"""Idempotency-Key: a repeated request returns its first result, once, across every instance.

What is remembered of a session's request is ids and counts (which session, which
messages): a replay reads the messages back from the session. A stateless turn (OpenAI's
Chat Completions, `store: false` responses) has no session to read back from, so its record
keeps the answer itself (stateless.py): user content, listed by the owner's export and gone
with their erasure, and like every record gone after `IDEMPOTENCY_TTL_SECONDS`. The request's
fingerprint is a keyed hash (HMAC-SHA256 under `IDEMPOTENCY_SECRET`), so a stored record
cannot confirm a guess of the message; records go with their session (`DELETE
/sessions/{id}`, a purge) and their owner (erasure).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, cast

import orjson
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.errors import GatewayError, InvalidRequest
from core.redis_clients import LoopClients, Lua, WhenBack, run_script, store_errors

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


class IdempotencyInProgress(GatewayError):
    code = "idempotency_in_progress"
    status = 409
    title = "Request in progress"
    default_detail = "A request with this Idempotency-Key is still being answered; retry shortly."


class IdempotencyKeyReused(GatewayError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency-Key reused"
    default_detail = "This Idempotency-Key was used with a different request."


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    key: str
    fingerprint: str
    # This request's own, not what it asks: its claim's owner, so that releasing the claim (a
    # retry's, or a lost reply's, come late) never drops another request's.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16), compare=False, repr=False)

    @classmethod
    def of(cls, header: str | None, *parts: Any) -> IdempotentRequest | None:
        """From the header and what makes the request what it is (path, parameters)."""
        if header is None:
            return None
        if not _KEY.match(header):
            raise InvalidRequest("Idempotency-Key: must be 1 to 255 printable ASCII characters.")
        payload = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
        return cls(header, hmac.new(fingerprint_key(), payload, hashlib.sha256).hexdigest())

    @property
    def key_id(self) -> str:
        """The key as stored: hashed, so a client's key (any string) never names a Redis key."""
        return _key_id(self.key)


@functools.cache
def fingerprint_key() -> bytes:
    """The fingerprints' key: `IDEMPOTENCY_SECRET`, or else one derived from `SECRET_KEY`
    (domain-separated, so the fingerprints reveal nothing about it)."""
    secret = settings.IDEMPOTENCY_SECRET or settings.SECRET_KEY
    return hmac.new(secret.encode(), b"gateway idempotency fingerprint", hashlib.sha256).digest()


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in {"IDEMPOTENCY_SECRET", "SECRET_KEY"}:
        fingerprint_key.cache_clear()


class Claim(StrEnum):
    NEW = "new"
    PENDING = "pending"
    MISMATCH = "mismatch"
    DONE = "done"


class IdempotencyStore(Protocol):
    async def claim(
        self, owner: str, request: IdempotentRequest, *, pending_seconds: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        """Take the key for this request (NEW), or say it is taken (PENDING), taken by another
        request (MISMATCH) or answered already (DONE, with the recorded result). The request
        that holds the claim (its `token`) gets NEW again: a claim resent after its reply was
        lost (redis-py retries a command whose connection failed) meets its own."""
        ...

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        """Remember the result for repeats. Never fails for an unreachable store: it keeps
        trying in the background (meanwhile a repeat is told the request is in progress)."""
        ...

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        """Forget the claim this request took (by its `token`), its request having failed, so a
        retry runs it again; another request's claim and a result stay. Never fails for an
        unreachable store: it keeps trying in the background (the claim lapses anyway)."""
        ...

    async def forget(self, owner: str) -> None:
        """Drop every record of the owner (erasure)."""
        ...

    async def forget_session(self, owner: str, session_id: str) -> None:
        """Drop the owner's records that name this session (it was deleted)."""
        ...

    async def describe(self, owner: str) -> list[dict[str, Any]]:
        """What is kept about the owner, for their export: each record's state, what it
        recorded (ids and counts; a stateless turn's answer) and lifetime; never the fingerprint."""
        ...


def _described(key_id: str, state: str, result: dict[str, Any] | None, expires_in: float) -> dict[str, Any]:
    return {"key_id": key_id, "state": state, "result": result, "expires_in_seconds": max(0, round(expires_in))}


@dataclass(frozen=True, slots=True)
class _Kept:
    fingerprint: str
    state: str
    result: dict[str, Any] | None
    until: float  # time.monotonic()
    by: str = ""  # a pending claim's request token


class MemoryIdempotencyStore:
    def __init__(self) -> None:
        self._records: dict[tuple[str, str], _Kept] = {}

    async def claim(
        self, owner: str, request: IdempotentRequest, *, pending_seconds: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        now = time.monotonic()
        record = self._records.get((owner, request.key))
        if record is None or record.until < now:
            until = now + pending_seconds
            self._records[(owner, request.key)] = _Kept(request.fingerprint, "pending", None, until, request.token)
            return Claim.NEW, None
        if record.fingerprint != request.fingerprint:
            return Claim.MISMATCH, None
        if record.state == "pending":
            return (Claim.NEW, None) if record.by == request.token else (Claim.PENDING, None)
        return Claim.DONE, record.result

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        self._records[(owner, request.key)] = _Kept(request.fingerprint, "done", result, time.monotonic() + ttl)

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        record = self._records.get((owner, request.key))
        if record is not None and record.state == "pending" and record.by == request.token:
            del self._records[(owner, request.key)]

    async def forget(self, owner: str) -> None:
        for key in [k for k in self._records if k[0] == owner]:
            del self._records[key]

    async def forget_session(self, owner: str, session_id: str) -> None:
        for (holder, key), record in list(self._records.items()):
            if holder == owner and record.result is not None and record.result.get("session_id") == session_id:
                del self._records[(holder, key)]

    async def describe(self, owner: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            _described(_key_id(key), record.state, record.result, record.until - now)
            for (holder, key), record in self._records.items()
            if holder == owner and record.until > now
        ]


# KEYS: the record, the owner's index. ARGV: fingerprint, pending seconds, index member, now,
# the request's token (`by`: whose claim it is; redis-py resends the script when the connection
# fails before its reply, and the request then finds its own claim).
_CLAIM = Lua("""
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], cjson.encode({fp = ARGV[1], state = 'pending', by = ARGV[5]}), 'EX', ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4] + ARGV[2], ARGV[3])
  if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
  return {'new'}
end
local record = cjson.decode(current)
if record.fp ~= ARGV[1] then return {'mismatch'} end
if record.state == 'pending' then
  if record.by == ARGV[5] then return {'new'} end
  return {'pending'}
end
return {'done', current}
""")

# KEYS: the record, the owner's index. ARGV: the request's token, index member. Only its own
# claim, and its index entry with it: a claim written before claims had a token (no `by`) lapses
# instead.
_RELEASE = Lua("""
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record.state == 'pending' and record.by == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
""")


class RedisIdempotencyStore:
    """One key per owner and Idempotency-Key, under the owner's hash tag, and an index of the
    owner's keys (`P:o:{owner}:idemidx`, sorted set by lapse time), written in the same round
    trip as the record, so a session's records can be found without scanning Redis."""

    def __init__(self, *, url: str, prefix: str = "gw", pending_seconds: float = 600.0, cluster: bool = False) -> None:
        """`pending_seconds`: how long a failed write is retried; pending claims lapse by then."""
        self._prefix = prefix
        self._client = LoopClients(url, cluster=cluster)
        self._when_back = WhenBack()
        self._pending_seconds = pending_seconds

    def _key(self, owner: str, request: IdempotentRequest | None = None) -> str:
        return self._record_key(owner, _key_id(request.key) if request else "*")

    def _record_key(self, owner: str, key_id: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:idem:{key_id}"

    def _index_key(self, owner: str) -> str:
        return f"{self._prefix}:o:{{{owner}}}:idemidx"

    @store_errors
    async def claim(
        self, owner: str, request: IdempotentRequest, *, pending_seconds: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        keys = (self._key(owner, request), self._index_key(owner))
        args = (request.fingerprint, pending_seconds, _key_id(request.key), int(time.time()), request.token)
        reply = await run_script(self._client(), _CLAIM, keys, args)  # by SHA: not the source each time
        claim = Claim(reply[0].decode())
        return claim, (orjson.loads(reply[1])["result"] if claim == Claim.DONE else None)

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        record = orjson.dumps({"fp": request.fingerprint, "state": "done", "result": result})
        await self._when_back.run(
            "idempotency result", lambda: self._set(owner, request, record, ttl), give_up_after=self._pending_seconds
        )

    @store_errors
    async def _set(self, owner: str, request: IdempotentRequest, record: bytes, ttl: int) -> None:
        pipe = self._client().pipeline(transaction=False)
        pipe.set(self._key(owner, request), record, ex=ttl)
        pipe.zadd(self._index_key(owner), {_key_id(request.key): int(time.time()) + ttl})
        pipe.expire(self._index_key(owner), ttl)  # every record lives `ttl`: the newest lasts longest
        await pipe.execute()

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        await self._when_back.run(
            "idempotency claim release", lambda: self._release(owner, request), give_up_after=self._pending_seconds
        )

    @store_errors
    async def _release(self, owner: str, request: IdempotentRequest) -> None:
        keys = (self._key(owner, request), self._index_key(owner))
        await run_script(self._client(), _RELEASE, keys, (request.token, _key_id(request.key)))

    @store_errors
    async def forget(self, owner: str) -> None:
        # A scan, not only the index: it also finds records written before there was one.
        client = self._client()
        keys = [k async for k in client.scan_iter(match=self._key(owner), count=500)]
        await client.delete(*keys, self._index_key(owner))

    async def _indexed(self, owner: str) -> list[tuple[str, bytes | None, float]]:
        """(key id, record or None, seconds left) of each record in the owner's index."""
        client = self._client()
        now = time.time()
        members = cast(
            list[tuple[bytes, float]],
            await client.zrangebyscore(self._index_key(owner), now, "+inf", withscores=True),
        )
        if not members:
            return []
        ids = [member.decode() for member, _ in members]
        records = cast(list[bytes | None], await client.mget([self._record_key(owner, i) for i in ids]))
        return [(i, r, until - now) for i, r, (_, until) in zip(ids, records, members, strict=True)]

    @store_errors
    async def forget_session(self, owner: str, session_id: str) -> None:
        named = [
            key_id
            for key_id, record, _ in await self._indexed(owner)
            if record is not None and (orjson.loads(record).get("result") or {}).get("session_id") == session_id
        ]
        if named:
            pipe = self._client().pipeline(transaction=False)
            pipe.delete(*(self._record_key(owner, i) for i in named))
            pipe.zrem(self._index_key(owner), *named)
            await pipe.execute()

    @store_errors
    async def describe(self, owner: str) -> list[dict[str, Any]]:
        described = []
        for key_id, raw, left in await self._indexed(owner):
            if raw is not None:
                record = orjson.loads(raw)
                described.append(_described(key_id, record["state"], record.get("result"), left))
        return described

    async def close(self) -> None:
        self._when_back.cancel()
        await self._client.close()


def _key_id(key: str) -> str:
    """The Idempotency-Key as stored: hashed, so a client's key (any string) never names a Redis key."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]
