"""Idempotency-Key: a repeated request returns its first result, once, across every instance.

What is remembered is ids and counts (which session, which messages), never content:
a replay reads the messages back from the session.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from core.errors import GatewayError, InvalidRequest
from core.redis_clients import LoopClients, WhenBack, store_errors

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

    @classmethod
    def of(cls, header: str | None, *parts: Any) -> IdempotentRequest | None:
        """From the header and what makes the request what it is (path, parameters)."""
        if header is None:
            return None
        if not _KEY.match(header):
            raise InvalidRequest("Idempotency-Key: must be 1 to 255 printable ASCII characters.")
        return cls(header, hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest())


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
        request (MISMATCH) or answered already (DONE, with the recorded result)."""
        ...

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        """Remember the result for repeats. Never fails for an unreachable store: it keeps
        trying in the background (meanwhile a repeat is told the request is in progress)."""
        ...

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        """Forget a claim whose request failed, so a retry runs it again. Never fails for an
        unreachable store: it keeps trying in the background (the claim lapses anyway)."""
        ...

    async def forget(self, owner: str) -> None: ...


class MemoryIdempotencyStore:
    def __init__(self) -> None:
        self._records: dict[tuple[str, str], tuple[str, str, dict[str, Any] | None, float]] = {}

    async def claim(
        self, owner: str, request: IdempotentRequest, *, pending_seconds: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        now = time.monotonic()
        record = self._records.get((owner, request.key))
        if record is None or record[3] < now:
            self._records[(owner, request.key)] = (request.fingerprint, "pending", None, now + pending_seconds)
            return Claim.NEW, None
        fingerprint, state, result, _ = record
        if fingerprint != request.fingerprint:
            return Claim.MISMATCH, None
        return (Claim.PENDING, None) if state == "pending" else (Claim.DONE, result)

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        self._records[(owner, request.key)] = (request.fingerprint, "done", result, time.monotonic() + ttl)

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        self._records.pop((owner, request.key), None)

    async def forget(self, owner: str) -> None:
        for key in [k for k in self._records if k[0] == owner]:
            del self._records[key]


_CLAIM = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], cjson.encode({fp = ARGV[1], state = 'pending'}), 'EX', ARGV[2])
  return {'new'}
end
local record = cjson.decode(current)
if record.fp ~= ARGV[1] then return {'mismatch'} end
if record.state == 'pending' then return {'pending'} end
return {'done', current}
"""


class RedisIdempotencyStore:
    """One key per owner and Idempotency-Key, under the owner's hash tag."""

    def __init__(self, *, url: str, prefix: str = "gw", pending_seconds: float = 600.0) -> None:
        """`pending_seconds`: how long a failed write is retried; pending claims lapse by then."""
        self._prefix = prefix
        self._client = LoopClients(url)
        self._when_back = WhenBack()
        self._pending_seconds = pending_seconds

    def _key(self, owner: str, request: IdempotentRequest | None = None) -> str:
        suffix = hashlib.sha256(request.key.encode()).hexdigest()[:32] if request else "*"
        return f"{self._prefix}:o:{{{owner}}}:idem:{suffix}"

    @store_errors
    async def claim(
        self, owner: str, request: IdempotentRequest, *, pending_seconds: int
    ) -> tuple[Claim, dict[str, Any] | None]:
        reply = await self._client().eval(_CLAIM, 1, self._key(owner, request), request.fingerprint, pending_seconds)
        claim = Claim(reply[0].decode())
        return claim, (orjson.loads(reply[1])["result"] if claim == Claim.DONE else None)

    async def complete(self, owner: str, request: IdempotentRequest, result: dict[str, Any], *, ttl: int) -> None:
        record = orjson.dumps({"fp": request.fingerprint, "state": "done", "result": result})
        await self._when_back.run(
            "idempotency result", lambda: self._set(owner, request, record, ttl), give_up_after=self._pending_seconds
        )

    @store_errors
    async def _set(self, owner: str, request: IdempotentRequest, record: bytes, ttl: int) -> None:
        await self._client().set(self._key(owner, request), record, ex=ttl)

    async def release(self, owner: str, request: IdempotentRequest) -> None:
        await self._when_back.run(
            "idempotency claim release", lambda: self._delete(owner, request), give_up_after=self._pending_seconds
        )

    @store_errors
    async def _delete(self, owner: str, request: IdempotentRequest) -> None:
        await self._client().delete(self._key(owner, request))

    @store_errors
    async def forget(self, owner: str) -> None:
        client = self._client()
        keys = [k async for k in client.scan_iter(match=self._key(owner), count=500)]
        if keys:
            await client.delete(*keys)

    async def close(self) -> None:
        self._when_back.cancel()
        await self._client.close()
