"""Session lifecycle writes: create, end (and archive), resume, delete."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from core.errors import PayloadTooLarge
from core.result import Err, Ok, returns_result, unwrap
from sessions_app.domain import ChatSession, SessionStatus
from sessions_app.errors import ContentTooLarge, SessionNotFound, UnknownModel
from sessions_app.idempotency import IdempotentRequest
from sessions_app.idempotency_guard import IdempotencyGuard, Recorded
from sessions_app.policy import SessionPolicy, owner_actor
from sessions_app.ports import ActiveSessionStore, SessionArchive
from sessions_app.recording import SessionEvent, SessionRecorder
from sessions_app.selectors import SessionSelectors

logger = logging.getLogger(__name__)


class SessionLifecycle:
    """Creates sessions and retires them, on any store, and records each step."""

    def __init__(
        self,
        *,
        store: ActiveSessionStore,
        archive: SessionArchive,
        recorder: SessionRecorder,
        policy: SessionPolicy,
        guard: IdempotencyGuard,
        selectors: SessionSelectors,
        clock: Callable[[], datetime],
        forget_session: Sequence[Callable[[str, str], Awaitable[None]]] = (),
    ) -> None:
        """`forget_session`: the other stores keyed by session (such as /v1/responses' records),
        each dropping what it holds about one `(owner, session_id)` when the session is deleted."""
        self._store = store
        self._archive = archive
        self._recorder = recorder
        self._policy = policy
        self._guard = guard
        self._selectors = selectors
        self._clock = clock
        self._forget_session = forget_session

    @returns_result
    async def session_create(
        self,
        *,
        owner: str,
        model: str | None = None,
        system_prompt: str = "",
        metadata: Mapping[str, Any] | None = None,
        idempotent: IdempotentRequest | None = None,
    ) -> ChatSession:
        """Create a session; with an Idempotency-Key, a repeat returns the first one."""

        async def create() -> ChatSession:
            return await self._create(owner, model, system_prompt, metadata)

        async def replay(recorded: Recorded) -> ChatSession:
            # Created before: the session as it is now, archived or not.
            return unwrap(await self._selectors.session_get(owner=owner, session_id=recorded["session_id"])).session

        async def remember(session: ChatSession) -> None:
            await self._guard.settle(owner, idempotent, {"session_id": session.id})

        return await self._guard.once(owner, idempotent, create, replay=replay, then=remember)

    async def _create(
        self, owner: str, model: str | None, system_prompt: str, metadata: Mapping[str, Any] | None
    ) -> ChatSession:
        policy = self._policy
        model = model or policy.default_model
        if not policy.knows(model):
            # The client's string is not echoed back: it may be anything, newlines included.
            offered = sorted(policy.known_models | {policy.default_model})
            raise UnknownModel(f"The model is not offered; choose one of: {', '.join(offered)}.")
        if len(system_prompt) > policy.max_system_prompt_chars:
            raise ContentTooLarge(f"The system prompt is longer than {policy.max_system_prompt_chars} characters.")
        metadata = dict(metadata or {})
        if len(orjson.dumps(metadata)) > policy.max_metadata_bytes:
            raise PayloadTooLarge(f"The metadata is larger than {policy.max_metadata_bytes} bytes.")
        now = self._clock()
        session = ChatSession(
            id=str(uuid.uuid4()),
            owner=owner,
            status=SessionStatus.ACTIVE,
            model=model,
            system_prompt=system_prompt,
            metadata=metadata,
            created_at=now,
            last_activity_at=now,
        )
        unwrap(await self._store.create(session, max_sessions_per_owner=policy.max_sessions_per_owner))
        await self._recorder.record(
            SessionEvent(
                action="session.create", session_id=session.id, owner=owner, actor=owner_actor(owner), session=session
            )
        )
        return session

    @returns_result
    async def session_end(self, *, owner: str, session_id: str) -> ChatSession:
        """End the session and archive it at once. Should the archive be unreachable, the
        session stays ended in the active store and the scheduler archives it later."""
        match await self._store.set_status(session_id, owner=owner, status=SessionStatus.ENDED, at=self._clock()):
            case Err(SessionNotFound()):
                transcript = await self._archive.fetch(session_id, owner=owner)  # ended before
                if transcript is None:
                    raise SessionNotFound()
                return transcript.session
            case Err(refusal):
                raise refusal
            case Ok(ended):
                pass
        await self._recorder.record(
            SessionEvent(
                action="session.end", session_id=session_id, owner=owner, actor=owner_actor(owner), session=ended
            )
        )
        match await self._archive.archive(session_id, actor=owner_actor(owner)):
            case Ok(archived):
                return archived
            case Err(failure):
                logger.warning(
                    "archiving ended session_id=%s failed (%s); the scheduler retries", session_id, failure.code
                )
                return ended

    @returns_result
    async def session_resume(self, *, owner: str, session_id: str) -> ChatSession:
        """Make the session active again; an archived one comes back with its whole history."""
        match await self._store.get(session_id, owner=owner):
            case Ok(session) if session.status == SessionStatus.ACTIVE:
                return session
            case Ok(_):
                resumed = unwrap(
                    await self._store.set_status(session_id, owner=owner, status=SessionStatus.ACTIVE, at=self._clock())
                )
                await self._recorder.record(
                    SessionEvent(
                        action="session.resume",
                        session_id=session_id,
                        owner=owner,
                        actor=owner_actor(owner),
                        session=resumed,
                    )
                )
                return resumed
        return unwrap(await self._archive.restore(session_id, owner=owner, actor=owner_actor(owner)))

    @returns_result
    async def session_delete(self, *, owner: str, session_id: str) -> None:
        """Erase the session everywhere: the active store, the archive, its record and the
        Idempotency-Key records that name it."""
        in_store = isinstance(await self._store.delete(session_id, owner=owner), Ok)
        in_archive = await self._archive.erase(session_id, owner=owner, actor=owner_actor(owner))
        # Even when it is gone already: a retry after this step failed still clears them.
        await self._guard.forget_session(owner, session_id)
        for forget in self._forget_session:
            await forget(owner, session_id)
        if not (in_store or in_archive):
            raise SessionNotFound()
        await self._recorder.record(
            SessionEvent(action="session.delete", session_id=session_id, owner=owner, actor=owner_actor(owner))
        )
