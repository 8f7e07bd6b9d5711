"""In-process `ActiveSessionStore` and `ArchiverSessionStore`: the embedded default for one process,
and the unit tests' store.

All methods run without awaiting inside, so on one event loop each call is
atomic just as a Redis script is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from core.result import Err, Ok, Result
from llm_backend.ports import ContextMessage
from sessions_app.domain import (
    ChatMessage,
    ChatSession,
    KeptKeyedWrite,
    KeyedWrite,
    SessionPage,
    SessionStatus,
    TokenUsage,
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
from sessions_app.ports import DELETED_IDS_KEPT, KEYED_WRITES_KEPT, SessionLookupError, SideWrite
from sessions_app.stores.encoding import decode_cursor, encode_cursor, index_member


@dataclass
class _Entry:
    session: ChatSession
    messages: list[ChatMessage] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)  # message id -> seq, oldest deletion first
    keyed: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # key -> (record, until), oldest first
    lock_token: str | None = None
    lock_expires: float = 0.0

    def locked(self) -> bool:
        return self.lock_token is not None and time.monotonic() < self.lock_expires


class InMemorySessionStore:
    # Another in-process store's writes ride its appends (`SideWrite.apply`).
    side_write_target = "process"

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_owner: dict[str, dict[str, str]] = {}  # owner -> {index member: session id}

    def _owned(self, session_id: str, owner: str) -> _Entry | None:
        entry = self._entries.get(session_id)
        return entry if entry is not None and entry.session.owner == owner else None

    async def create(self, session: ChatSession, *, max_sessions_per_owner: int) -> Result[None, SessionLimitReached]:
        owned = self._by_owner.setdefault(session.owner, {})
        if len(owned) >= max_sessions_per_owner:
            return Err(SessionLimitReached())
        owned[index_member(session.id, session.created_at)] = session.id
        self._entries[session.id] = _Entry(session=session)
        return Ok(None)

    async def get(self, session_id: str, *, owner: str) -> Result[ChatSession, SessionNotFound]:
        entry = self._owned(session_id, owner)
        return Ok(entry.session) if entry is not None else Err(SessionNotFound())

    async def load(
        self, session_id: str, *, owner: str, offset: int = 0, limit: int | None = None, from_seq: int | None = None
    ) -> Result[Transcript, SessionNotFound]:
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        if from_seq is not None:
            offset = next(
                (i for i, m in enumerate(entry.messages) if cast(int, m.seq) >= from_seq), len(entry.messages)
            )
        return Ok(Transcript(entry.session, tuple(entry.messages[offset : None if limit is None else offset + limit])))

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
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        if key is not None and (kept := entry.keyed.get(key)) is not None and kept[1] > time.time():
            return Ok(TurnHistory(entry.session, (), None, answered=kept[0]))
        if entry.session.status != SessionStatus.ACTIVE:
            return Err(SessionNotActive())
        if entry.locked():
            return Err(TurnInProgress())
        entry.lock_token, entry.lock_expires = token, time.monotonic() + lock_seconds
        history = entry.messages[-history_limit:] if history_limit > 0 else []
        return Ok(
            TurnHistory(
                entry.session,
                tuple(ContextMessage(m.role, m.content) for m in history),
                history[-1].id if history else None,
            )
        )

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
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        if entry.lock_token != token or not entry.locked():
            return Err(TurnInProgress("The turn lost its lock before its reply was stored."))
        if keyed is not None:
            entry.keyed.pop(keyed.key, None)
            entry.keyed[keyed.key] = (keyed.record, time.time() + keyed.ttl_seconds)
            while len(entry.keyed) > KEYED_WRITES_KEPT:
                del entry.keyed[next(iter(entry.keyed))]
        old = entry.session
        entry.messages.extend(dataclasses.replace(m, seq=old.next_seq + i) for i, m in enumerate(messages))
        entry.session = dataclasses.replace(
            old,
            last_activity_at=at,
            message_count=old.message_count + len(messages),
            next_seq=old.next_seq + len(messages),
            usage=TokenUsage(
                input_tokens=old.usage.input_tokens + usage.input_tokens,
                output_tokens=old.usage.output_tokens + usage.output_tokens,
            ),
        )
        entry.lock_token = None
        if side is not None and side.apply is not None:
            side.apply()
        return Ok(entry.session)

    async def keyed_write(self, session_id: str, *, owner: str, key: str) -> bytes | None:
        entry = self._owned(session_id, owner)
        kept = entry.keyed.get(key) if entry is not None else None
        return kept[0] if kept is not None and kept[1] > time.time() else None

    async def keyed_writes(self, session_id: str, *, owner: str) -> tuple[KeptKeyedWrite, ...]:
        entry = self._owned(session_id, owner)
        kept = reversed(entry.keyed.items()) if entry is not None else ()
        return tuple(KeptKeyedWrite(key, record, datetime.fromtimestamp(until, UTC)) for key, (record, until) in kept)

    async def extend_turn(self, session_id: str, *, token: str, lock_seconds: float) -> bool:
        entry = self._entries.get(session_id)
        if entry is None or entry.lock_token != token or not entry.locked():
            return False
        entry.lock_expires = time.monotonic() + lock_seconds
        return True

    async def release_turn(self, session_id: str, *, token: str) -> None:
        entry = self._entries.get(session_id)
        if entry is not None and entry.lock_token == token:
            entry.lock_token = None

    async def set_status(
        self, session_id: str, *, owner: str, status: SessionStatus, at: datetime
    ) -> Result[ChatSession, SessionNotFound | TurnInProgress]:
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        if entry.locked():
            return Err(TurnInProgress())
        entry.session = dataclasses.replace(entry.session, status=status, last_activity_at=at)
        return Ok(entry.session)

    async def set_metadata(
        self, session_id: str, *, owner: str, metadata: Mapping[str, Any], at: datetime
    ) -> Result[ChatSession, SessionNotFound]:
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        entry.session = dataclasses.replace(entry.session, metadata=dict(metadata), last_activity_at=at)
        return Ok(entry.session)

    async def delete_message(
        self, session_id: str, *, owner: str, message_id: str, at: datetime
    ) -> Result[ChatSession, SessionNotFound | MessageNotFound | TurnInProgress]:
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        if entry.locked():
            return Err(TurnInProgress())
        index = next((i for i, m in enumerate(entry.messages) if m.id == message_id), None)
        if index is None:
            return Err(MessageNotFound())
        entry.deleted[message_id] = cast(int, entry.messages.pop(index).seq)
        if len(entry.deleted) > DELETED_IDS_KEPT:
            del entry.deleted[next(iter(entry.deleted))]
        old = entry.session
        entry.session = dataclasses.replace(old, message_count=old.message_count - 1, last_activity_at=at)
        return Ok(entry.session)

    async def deleted_message_seq(self, session_id: str, *, owner: str, message_id: str) -> int | None:
        entry = self._owned(session_id, owner)
        return None if entry is None else entry.deleted.get(message_id)

    async def lock_for_archive(
        self, session_id: str, *, token: str, lock_seconds: float
    ) -> Result[Transcript, SessionNotFound | TurnInProgress]:
        entry = self._entries.get(session_id)
        if entry is None:
            return Err(SessionNotFound())
        if entry.locked():
            return Err(TurnInProgress())
        entry.lock_token, entry.lock_expires = token, time.monotonic() + lock_seconds
        return Ok(Transcript(entry.session, tuple(entry.messages)))

    async def delete_locked(self, session_id: str, *, token: str) -> bool:
        entry = self._entries.get(session_id)
        if entry is None or entry.lock_token != token or not entry.locked():
            return False
        await self.delete(session_id, owner=entry.session.owner)
        return True

    async def restore(
        self, transcript: Transcript, *, max_sessions_per_owner: int
    ) -> Result[bool, SessionLimitReached]:
        session = transcript.session
        if session.id in self._entries:
            return Ok(False)
        owned = self._by_owner.setdefault(session.owner, {})
        if len(owned) >= max_sessions_per_owner:
            return Err(SessionLimitReached())
        owned[index_member(session.id, session.created_at)] = session.id
        transcript = transcript.sequenced()
        self._entries[session.id] = _Entry(session=transcript.session, messages=list(transcript.messages))
        return Ok(True)

    async def list_by_owner(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        after = decode_cursor(cursor) if cursor else None
        members = sorted(self._by_owner.get(owner, {}), reverse=True)
        if after is not None:
            members = [m for m in members if m < after]
        page = members[:limit]
        owned = self._by_owner.get(owner, {})
        sessions = tuple(self._entries[owned[m]].session for m in page)
        more = len(members) > limit
        return SessionPage(sessions=sessions, next_cursor=encode_cursor(page[-1]) if more and page else None)

    async def list_idle(self, *, before: datetime, limit: int) -> list[str]:
        idle = sorted(
            (e.session.last_activity_at, sid) for sid, e in self._entries.items() if e.session.last_activity_at < before
        )
        return [sid for _, sid in idle[:limit]]

    async def count_idle(self, *, before: datetime) -> int:
        return sum(e.session.last_activity_at < before for e in self._entries.values())

    async def delete(self, session_id: str, *, owner: str) -> Result[None, SessionNotFound]:
        entry = self._owned(session_id, owner)
        if entry is None:
            return Err(SessionNotFound())
        del self._entries[session_id]
        self._by_owner[owner].pop(index_member(session_id, entry.session.created_at), None)
        return Ok(None)

    async def ping(self) -> None:
        return None

    async def count_active(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        return None
