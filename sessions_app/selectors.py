"""Reads of sessions: from the active store, or else the archive. Nothing here writes."""

from __future__ import annotations

from typing import cast

from core.result import Ok, returns_result
from sessions_app.domain import SessionPage, SessionStatus, Transcript
from sessions_app.errors import SessionNotFound
from sessions_app.ports import ActiveSessionStore, SessionArchive


class SessionSelectors:
    """What the owner may read of their sessions, active or archived."""

    def __init__(self, *, store: ActiveSessionStore, archive: SessionArchive) -> None:
        self._store = store
        self._archive = archive

    @returns_result
    async def session_exists(self, *, owner: str, session_id: str) -> bool:
        """Whether the owner has this session, active or archived."""
        if isinstance(await self._store.get(session_id, owner=owner), Ok):
            return True
        return await self._archive.is_archived(session_id, owner=owner)

    @returns_result
    async def session_get(
        self, *, owner: str, session_id: str, offset: int = 0, limit: int | None = None, from_seq: int | None = None
    ) -> Transcript:
        """The session with its messages (all, or `limit` from the `offset`-th, or from the first
        whose seq is at least `from_seq`; oldest first), from the active store or else the archive."""
        match await self._store.load(session_id, owner=owner, offset=offset, limit=limit, from_seq=from_seq):
            case Ok(transcript):
                return transcript
        archived = await self._archive.fetch(session_id, owner=owner)
        if archived is None:
            raise SessionNotFound()
        # An archive is one sealed object, read whole (as bounded as the session it holds).
        messages = archived.messages
        if from_seq is not None:
            offset = next((i for i, m in enumerate(messages) if cast(int, m.seq) >= from_seq), len(messages))
        end = None if limit is None else offset + limit
        return Transcript(archived.session, messages[offset:end])

    async def deleted_message_seq(self, *, owner: str, session_id: str, message_id: str) -> int | None:
        """The seq a recently deleted message of the owner's active session had, or None (any other
        id, another owner's session, an archived one: it keeps no deleted ids)."""
        return await self._store.deleted_message_seq(session_id, owner=owner, message_id=message_id)

    @returns_result
    async def session_list(
        self, *, owner: str, limit: int, cursor: str | None = None, status: SessionStatus | None = None
    ) -> SessionPage:
        """The owner's sessions, newest first: those in the active store, or the archived ones."""
        if status == SessionStatus.ARCHIVED:
            return await self._archive.list_archived(owner, limit=limit, cursor=cursor)
        page = await self._store.list_by_owner(owner, limit=limit, cursor=cursor)
        if status is None:
            return page
        # Filtered after paging: a page may come back short, the cursor still walks them all.
        return SessionPage(tuple(s for s in page.sessions if s.status == status), page.next_cursor)
