"""Moving sessions between the active store and the archive, and retiring archives.

Longer than the house's ~300 lines on purpose: the archive sequence (lock in Redis, seal, write,
record, delete from Redis) and its crash-safe inverse (restore) share their invariants with the
idle and purge passes that drive them; split apart, each half would have to restate them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace

from archive import codec, crypto, metrics, selectors
from archive.errors import ArchiveUnavailable, ArchiveUnreadable, OwnerBusy
from archive.keys import KeyRing
from archive.owner_gate import MemoryOwnerGate, owner_closed
from archive.ports import ArchiveSessionStore, OwnerGate
from core.errors import GatewayError
from core.result import Err, Ok, Result, returns_result, unwrap
from sessions_app.public import (
    ArchiverSessionStore,
    ChatSession,
    SessionEvent,
    SessionNotFound,
    SessionPage,
    SessionRecorder,
    SessionStatus,
    Transcript,
    TurnInProgress,
    decode_cursor,
    encode_cursor,
    index_member,
)

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway.archive")


@dataclass
class PassReport:
    """What one archive or purge pass did (counts only)."""

    examined: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    unfinished: bool = False  # ended by its time budget or a stop, with idle sessions left


def outcome_of(result: Result[Any, GatewayError]) -> str:
    return "ok" if isinstance(result, Ok) else result.error.code


def seal_context(owner: str, session_id: str) -> bytes:
    return f"{owner}\x00{session_id}".encode()


class ArchiveService:
    """Implements the session app's `SessionArchive` port, plus the operators' passes.

    Archiving is crash-safe and idempotent: lock the session, write the object,
    read it back and compare, record it, and only then delete it from the active
    store, under the same lock. A crash or failure at any step leaves the session
    in the active store; the next attempt overwrites the same object.

    Why a gate per owner: archiving and resuming write an owner's archives and may make their
    data key, erasure and purge destroy them, and they run in different processes (gateways,
    the scheduler, commands). Interleaved, an erasure left objects, a new key and records
    behind, and a purge destroyed a key an archive was using. So the writers enter the owner's
    gate (many at once), the destroyers close it (alone, after the writers inside are done,
    waiting at most `close_wait` seconds before `503 owner_busy`). It costs archiving and
    resuming two Redis round trips (enter, leave); turns never touch it.
    """

    def __init__(
        self,
        *,
        active: ArchiverSessionStore,
        archive: ArchiveSessionStore,
        keys: KeyRing,
        recorder: SessionRecorder,
        clock: Callable[[], datetime],
        lock_seconds: float = 120.0,
        max_sessions_per_owner: int = 1000,
        gate: OwnerGate | None = None,
        close_wait: float = 10.0,
        forget_session: Sequence[Callable[[str, str], Awaitable[None]]] = (),
    ) -> None:
        """`forget_session`: the other stores keyed by session (Idempotency-Key records,
        /v1/responses' records), told when a purge retires a session, as deleting one does."""
        self._forget_session = forget_session
        self._active = active
        self._archive = archive
        self._keys = keys
        self._recorder = recorder
        self._clock = clock
        self._lock_seconds = lock_seconds
        self._max_sessions = max_sessions_per_owner
        self._gate = gate or MemoryOwnerGate()
        self._close_wait = close_wait

    # -- the SessionArchive port ------------------------------------------------

    async def archive(self, session_id: str, *, actor: str) -> Result[ChatSession, GatewayError]:
        with tracer.start_as_current_span("archive session", attributes={"gateway.session_id": session_id}):
            result = await self._archive_one(session_id, actor=actor)
        metrics.ARCHIVE_OPERATIONS.labels(operation="archive", outcome=outcome_of(result)).inc()
        return result

    @returns_result
    async def _archive_one(self, session_id: str, *, actor: str) -> ChatSession:
        token = secrets.token_urlsafe(16)
        transcript = unwrap(
            await self._active.lock_for_archive(session_id, token=token, lock_seconds=self._lock_seconds)
        )
        owner = transcript.session.owner
        try:
            entered = await self._gate.enter(owner, token, hold_seconds=self._lock_seconds)
        except BaseException:
            await self._active.release_turn(session_id, token=token)
            raise
        if not entered:  # being erased: it will be deleted, not archived
            await self._active.release_turn(session_id, token=token)
            raise OwnerBusy()
        try:
            return await self._archive_locked(transcript, token=token, actor=actor)
        finally:
            await self._leave(owner, token)

    async def _leave(self, owner: str, token: str) -> None:
        if not await self._gate.leave(owner, token):
            logger.error("an archive or resume outlasted its hold on the owner (ARCHIVE_LOCK_SECONDS)")

    async def _archive_locked(self, transcript: Transcript, *, token: str, actor: str) -> ChatSession:
        session_id, owner = transcript.session.id, transcript.session.owner
        try:
            key_id, key = await self._keys.key_for(owner)
            sealed = crypto.seal(
                codec.encode(transcript), key=key, key_id=key_id, context=seal_context(owner, session_id)
            )
            name = await self._archive.put(owner, session_id, sealed)
            stored = await self._archive.get(owner, session_id)
            if stored is None or hashlib.sha256(stored).digest() != hashlib.sha256(sealed).digest():
                raise ArchiveUnavailable("The archived copy did not read back intact.")
            archived = dataclasses.replace(transcript.session, status=SessionStatus.ARCHIVED)
            await self._recorder.record(
                SessionEvent(
                    action="session.archive",
                    session_id=session_id,
                    owner=owner,
                    actor=actor,
                    session=archived,
                    archived_at=self._clock(),
                    object_name=name,
                    details={"messages": len(transcript.messages), "bytes": len(sealed)},
                )
            )
        except BaseException:
            await self._active.release_turn(session_id, token=token)
            raise
        if not await self._active.delete_locked(session_id, token=token):
            # The lock lapsed (a very slow upload) and a turn may have changed the session:
            # it stays active, its record says so, and the next pass archives it again.
            await self._recorder.record(
                SessionEvent(
                    action="session.archive",
                    session_id=session_id,
                    owner=owner,
                    actor=actor,
                    session=transcript.session,
                    outcome="failure",
                    details={"reason": "lock lapsed"},
                )
            )
            raise TurnInProgress("The session changed while it was being archived; it will be archived later.")
        return archived

    async def fetch(self, session_id: str, *, owner: str) -> Transcript | None:
        sealed = await self._archive.get(owner, session_id)
        if sealed is None:
            return None
        try:
            key = await self._keys.key_by_id(crypto.header_of(sealed)["kid"])
            if key is None:
                raise crypto.UnreadableArchive("the owner's data key is destroyed")
            transcript = codec.decode(crypto.open_sealed(sealed, key=key, context=seal_context(owner, session_id)))
        except (crypto.UnreadableArchive, ValueError, KeyError) as exc:
            logger.error("archived session unreadable session_id=%s: %s", session_id, exc)
            raise ArchiveUnreadable() from exc
        if transcript.session.owner != owner or transcript.session.id != session_id:
            raise ArchiveUnreadable()
        return transcript

    async def list_archived(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        after = decode_cursor(cursor) if cursor else None
        records = await selectors.archived_records(owner, limit=limit + 1, after=after)
        page, more = records[:limit], len(records) > limit
        transcripts = await asyncio.gather(*(self.fetch(str(r.id), owner=owner) for r in page))
        sessions = tuple(t.session for t in transcripts if t is not None)
        last = page[-1] if page else None
        next_cursor = encode_cursor(index_member(str(last.id), last.created_at)) if more and last else None
        return SessionPage(sessions=sessions, next_cursor=next_cursor)

    async def is_archived(self, session_id: str, *, owner: str) -> bool:
        return await selectors.is_archived(session_id, owner=owner)

    async def restore(self, session_id: str, *, owner: str, actor: str) -> Result[ChatSession, GatewayError]:
        with tracer.start_as_current_span("restore session", attributes={"gateway.session_id": session_id}):
            result = await self._restore_one(session_id, owner=owner, actor=actor)
        metrics.ARCHIVE_OPERATIONS.labels(operation="restore", outcome=outcome_of(result)).inc()
        return result

    @returns_result
    async def _restore_one(self, session_id: str, *, owner: str, actor: str) -> ChatSession:
        token = secrets.token_urlsafe(16)
        # Entered like an archive: an erasure running meanwhile would miss the session it puts back.
        if not await self._gate.enter(owner, token, hold_seconds=self._lock_seconds):
            raise OwnerBusy()
        try:
            return await self._restore_entered(session_id, owner=owner, actor=actor)
        finally:
            await self._leave(owner, token)

    async def _restore_entered(self, session_id: str, *, owner: str, actor: str) -> ChatSession:
        transcript = await self.fetch(session_id, owner=owner)
        if transcript is None:
            raise SessionNotFound()
        session = dataclasses.replace(transcript.session, status=SessionStatus.ACTIVE, last_activity_at=self._clock())
        unwrap(
            await self._active.restore(
                Transcript(session, transcript.messages), max_sessions_per_owner=self._max_sessions
            )
        )
        await self._recorder.record(
            SessionEvent(
                action="session.resume",
                session_id=session_id,
                owner=owner,
                actor=actor,
                session=session,
                object_name="",
            )
        )
        await self._archive.delete(owner, session_id)  # it lives in the active store again
        return session

    async def erase(self, session_id: str, *, owner: str, actor: str) -> bool:
        # After any archive of the owner under way: one of this session would write it again.
        async with self.owner_closed(owner):
            return await self._archive.delete(owner, session_id)

    def owner_closed(self, owner: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the owner alone (no archive or resume of theirs runs) for a destroying job."""
        return owner_closed(self._gate, owner, wait=self._close_wait, hold_seconds=self._lock_seconds)

    # -- the operators' passes ----------------------------------------------------

    async def archive_idle(
        self,
        *,
        idle_for: timedelta,
        dry_run: bool = False,
        batch: int = 100,
        actor: str = "scheduler",
        budget: float | None = None,
        stop: asyncio.Event | None = None,
    ) -> PassReport:
        """Archive every session idle for longer than `idle_for`, oldest first, until none is left.

        A session mid-turn, or one that fails, waits for the next pass; the pass goes on past
        it. With a `budget` (seconds) the pass ends once it is spent, or when `stop` is set,
        and reports `unfinished`: the next pass resumes with the oldest left.
        """
        report = PassReport()
        before = self._clock() - idle_for
        if dry_run:
            ids = await self._active.list_idle(before=before, limit=batch)
            report.examined = report.skipped = len(ids)
            return report
        loop = asyncio.get_running_loop()
        deadline = None if budget is None else loop.time() + budget
        passed: set[str] = set()  # met this pass and left in the active store: not asked for again
        while True:
            # At most `len(passed)` of those listed were passed over already: the rest are a batch.
            listed = await self._active.list_idle(before=before, limit=batch + len(passed))
            ids = [session_id for session_id in listed if session_id not in passed]
            if not ids:
                return report
            report.examined += len(ids)
            for index, session_id in enumerate(ids):
                match await self.archive(session_id, actor=actor):
                    case Ok():
                        report.done += 1
                    # An owner being erased: their sessions go with the erasure, not to the archive.
                    case Err(TurnInProgress() | SessionNotFound() | OwnerBusy()):
                        report.skipped += 1
                        passed.add(session_id)
                    case Err(ArchiveUnavailable() as error):
                        # The archive is down: every other session would wait out the same retries
                        # in vain. They all stay in the active store for the next pass.
                        report.failed += len(ids) - index
                        logger.warning("archiving session_id=%s failed: %s; pass ended", session_id, error.code)
                        return report
                    case Err(error):
                        report.failed += 1
                        passed.add(session_id)
                        logger.warning("archiving session_id=%s failed: %s", session_id, error.code)
                out_of_time = deadline is not None and loop.time() >= deadline
                if out_of_time or (stop is not None and stop.is_set()):
                    report.examined -= len(ids) - index - 1  # listed, but not tried
                    report.unfinished = True
                    return report

    async def purge_expired(
        self, *, older_than: timedelta, dry_run: bool = False, actor: str = "scheduler"
    ) -> PassReport:
        """Delete archived sessions older than the retention period, and the data key of an owner
        left with none."""
        report = PassReport()
        expired = await selectors.expired_records(before=self._clock() - older_than)
        report.examined = len(expired)
        if dry_run:
            report.skipped = len(expired)
            return report
        owners: set[str] = set()
        for record in expired:
            session_id = str(record.id)
            try:
                await self._archive.delete(record.owner, session_id)
            except GatewayError as error:
                report.failed += 1
                metrics.ARCHIVE_OPERATIONS.labels(operation="purge", outcome=error.code).inc()
                logger.warning("purging session_id=%s failed: %s", session_id, error.code)
                continue
            metrics.ARCHIVE_OPERATIONS.labels(operation="purge", outcome="ok").inc()
            await self._forget(record.owner, session_id)
            await self._recorder.record(
                SessionEvent(
                    action="session.purge",
                    session_id=session_id,
                    owner=record.owner,
                    actor=actor,
                    status="purged",
                    object_name="",
                    details={"archived_at": record.archived_at.isoformat() if record.archived_at else None},
                )
            )
            owners.add(record.owner)
            report.done += 1
        for owner in owners:
            try:
                # Checked with the owner held: an archive may have the key in hand and not yet
                # its record; once it is done, its record shows and the key stays.
                async with self.owner_closed(owner):
                    if not await selectors.has_archived(owner):
                        await self._keys.destroy(owner)
            except OwnerBusy:  # an unused key kept: it goes with the owner's next purge or erasure
                logger.warning("an owner's data key was kept: their archiving went on past the wait")
        return report

    async def _forget(self, owner: str, session_id: str) -> None:
        for forget in self._forget_session:
            try:
                await forget(owner, session_id)
            except GatewayError as error:  # they lapse with their own TTL; the next erasure takes them
                logger.warning("forgetting a purged session_id=%s's records failed: %s", session_id, error.code)
