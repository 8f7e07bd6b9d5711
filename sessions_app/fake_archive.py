"""The fake of the `SessionArchive` port, for unit tests: archived transcripts kept in a dict
(the archive app's `ArchiveSessionStore` and its fakes are another port)."""

from __future__ import annotations

import dataclasses

from core.errors import GatewayError
from core.result import Err, Ok, Result
from sessions_app.domain import ChatSession, SessionPage, SessionStatus, Transcript
from sessions_app.errors import SessionNotFound
from sessions_app.ports import ArchiverSessionStore

ARCHIVE_TOKEN = "in-memory-archiver"  # noqa: S105 - a lock token, not a secret


class InMemorySessionArchive:
    def __init__(self, active: ArchiverSessionStore) -> None:
        self._active = active
        self.archived: dict[str, Transcript] = {}
        self.fail_with: GatewayError | None = None

    async def archive(self, session_id: str, *, actor: str) -> Result[ChatSession, GatewayError]:
        if self.fail_with is not None:
            return Err(self.fail_with)
        locked = await self._active.lock_for_archive(session_id, token=ARCHIVE_TOKEN, lock_seconds=30)
        if isinstance(locked, Err):
            return Err(locked.error)
        session = dataclasses.replace(locked.value.session, status=SessionStatus.ARCHIVED)
        self.archived[session_id] = Transcript(session, locked.value.messages)
        await self._active.delete_locked(session_id, token=ARCHIVE_TOKEN)
        return Ok(session)

    async def fetch(self, session_id: str, *, owner: str) -> Transcript | None:
        found = self.archived.get(session_id)
        return found if found is not None and found.session.owner == owner else None

    async def is_archived(self, session_id: str, *, owner: str) -> bool:
        return await self.fetch(session_id, owner=owner) is not None

    async def list_archived(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        mine = sorted(
            (t.session for t in self.archived.values() if t.session.owner == owner), key=lambda s: s.created_at
        )
        return SessionPage(sessions=tuple(reversed(mine))[:limit], next_cursor=None)

    async def restore(self, session_id: str, *, owner: str, actor: str) -> Result[ChatSession, GatewayError]:
        found = await self.fetch(session_id, owner=owner)
        if found is None:
            return Err(SessionNotFound())
        session = dataclasses.replace(found.session, status=SessionStatus.ACTIVE)
        restored = await self._active.restore(Transcript(session, found.messages), max_sessions_per_owner=10**6)
        if isinstance(restored, Err):
            return Err(restored.error)
        del self.archived[session_id]
        return Ok(session)

    async def erase(self, session_id: str, *, owner: str, actor: str) -> bool:
        if await self.fetch(session_id, owner=owner) is None:
            return False
        del self.archived[session_id]
        return True
