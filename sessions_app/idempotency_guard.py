"""The Idempotency-Key sequence, claim → run → complete or release, for every service that takes one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import orjson

from sessions_app.domain import KeptKeyedWrite, KeyedWrite
from sessions_app.idempotency import (
    Claim,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IdempotencyStore,
    IdempotentRequest,
)

T = TypeVar("T")
Recorded = dict[str, Any]


class AnsweredBefore(Exception):
    """Raised by a request's `run` that finds it was answered already, though the idempotency
    store had no record of it (a failover lost it, or the answer was lost on its way): the
    record it found where the answer was stored (`IdempotencyGuard.keyed`) is replayed."""

    def __init__(self, recorded: Recorded) -> None:
        super().__init__("answered before")
        self.recorded = recorded


class IdempotencyGuard:
    """Runs a request once per Idempotency-Key; a repeat gets the first result back."""

    def __init__(self, store: IdempotencyStore, *, pending_seconds: int, ttl: int) -> None:
        self._store = store
        self._pending_seconds = pending_seconds  # how long a claim holds while its request runs
        self._ttl = ttl  # how long a result is remembered

    async def once(
        self,
        owner: str,
        request: IdempotentRequest | None,
        run: Callable[[], Awaitable[T]],
        *,
        replay: Callable[[Recorded], Awaitable[T]],
        then: Callable[[T], Awaitable[None]] | None = None,
        stored: Callable[[], Awaitable[bytes | None]] | None = None,
    ) -> T:
        """`run()`, unless the key was answered before: then `replay(what was recorded)`.

        A key still being answered raises `IdempotencyInProgress`; one used with another
        request, `IdempotencyKeyReused`. Should the claim or `run()` fail, the key is released
        (this request's claim only) so a retry runs it again. What `run()` returns goes to
        `then` (not a replay's), which `settle`s the key, now or once what it started has ended.
        `stored()`: for a key still pending, the `keyed` record the request's own write left, if
        it was stored (its process died before completing the key, or a failover lost the
        completion): replayed rather than refused.
        """
        if request is None:
            value = await run()
        else:
            try:
                claim, recorded = await self._store.claim(owner, request, pending_seconds=self._pending_seconds)
            except BaseException:
                # Its reply lost (the connection closed under it: a cluster client reloading its
                # slot map closes every node's), the key may be claimed all the same: released by
                # the request's token now or once Redis is back, as a failed request's.
                await self._store.release(owner, request)
                raise
            if claim == Claim.PENDING:
                record = await stored() if stored is not None else None
                if record is None:
                    raise IdempotencyInProgress()
                recorded = self.answered(request, record).recorded
                await self._store.complete(owner, request, recorded, ttl=self._ttl)
                return await replay(recorded)
            if claim == Claim.MISMATCH:
                raise IdempotencyKeyReused()
            if claim == Claim.DONE and recorded is not None:
                return await replay(recorded)
            try:
                value = await run()
            except AnsweredBefore as answered:
                await self._store.complete(owner, request, answered.recorded, ttl=self._ttl)
                return await replay(answered.recorded)
            except BaseException:
                await self._store.release(owner, request)
                raise
        if then is not None:
            await then(value)
        return value

    async def settle(self, owner: str, request: IdempotentRequest | None, recorded: Recorded | None) -> None:
        """Remember `recorded` for the key's repeats, or (None: the request did not complete)
        release the key, so a retry runs it again."""
        if request is None:
            return
        if recorded is not None:
            await self._store.complete(owner, request, recorded, ttl=self._ttl)
        else:
            await self._store.release(owner, request)

    def keyed(self, request: IdempotentRequest, recorded: Recorded) -> KeyedWrite:
        """The key's record to store with the write it answers (in the same atomic step), so that
        the write itself knows its key: on a Redis Cluster the idempotency store is another
        master, which a failover can roll back (its claim, its completion) while the write stays."""
        record = orjson.dumps({"fp": request.fingerprint, "result": recorded})
        return KeyedWrite(request.key_id, record, self._ttl)

    @staticmethod
    def answered(request: IdempotentRequest, record: bytes) -> AnsweredBefore:
        """What a `keyed` record found with the write means for `request`: answered before (to
        raise from `run`), or `IdempotencyKeyReused` raised when it was another request's."""
        kept = orjson.loads(record)
        if kept["fp"] != request.fingerprint:
            raise IdempotencyKeyReused()
        return AnsweredBefore(kept["result"])

    async def forget_session(self, owner: str, session_id: str) -> None:
        await self._store.forget_session(owner, session_id)


def described_keyed_write(session_id: str, kept: KeptKeyedWrite, *, now: datetime) -> dict[str, Any]:
    """A keyed write a session keeps (`IdempotencyGuard.keyed`'s record), for the owner's export
    as the idempotency store describes its records: the key's id, what it recorded (ids and
    counts) and the lifetime left; never the fingerprint."""
    return {
        "session_id": session_id,
        "key_id": kept.key,
        "result": orjson.loads(kept.record).get("result"),
        "expires_in_seconds": max(0, round((kept.until - now).total_seconds())),
    }
