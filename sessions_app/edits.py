"""Writes to a session outside a turn: its metadata replaced, messages added or removed.

The OpenAI-compatible API's conversations need them (items added without a model
turn, one item deleted, metadata replaced); they obey the same rules as a turn: the
owner's session only, the content and message limits, never while a turn runs, and an
archived session is brought back first, as a turn on it would be.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from core.errors import PayloadTooLarge
from core.result import Ok, returns_result, unwrap
from llm_backend.ports import Role, TokenUsage
from sessions_app.domain import ChatMessage, ChatSession
from sessions_app.errors import ContentTooLarge, MessageLimitReached, MessageNotFound
from sessions_app.idempotency import IdempotentRequest
from sessions_app.idempotency_guard import IdempotencyGuard, Recorded
from sessions_app.lifecycle import SessionLifecycle
from sessions_app.policy import SessionPolicy, new_message_id, owner_actor
from sessions_app.ports import ActiveSessionStore
from sessions_app.recording import SessionEvent, SessionRecorder
from sessions_app.selectors import SessionSelectors

NewMessage = tuple[Role, str]  # a message to add: its role and its content


class SessionEdits:
    """Edits of the owner's sessions between turns, each recorded (never its content)."""

    def __init__(
        self,
        *,
        store: ActiveSessionStore,
        recorder: SessionRecorder,
        policy: SessionPolicy,
        lifecycle: SessionLifecycle,
        selectors: SessionSelectors,
        guard: IdempotencyGuard,
        clock: Callable[[], datetime],
    ) -> None:
        self._selectors = selectors
        self._guard = guard
        self._store = store
        self._recorder = recorder
        self._policy = policy
        self._lifecycle = lifecycle
        self._clock = clock

    @returns_result
    async def messages_append(
        self,
        *,
        owner: str,
        session_id: str,
        messages: Sequence[NewMessage],
        idempotent: IdempotentRequest | None = None,
    ) -> tuple[ChatMessage, ...]:
        """Append `messages` as they are, no model asked: under the turn lock, so never into a
        running turn's history; `MessageLimitReached` past the session's limit. With an
        Idempotency-Key, a repeat returns the messages the first request added."""

        async def append() -> tuple[ChatMessage, ...]:
            return await self._append(owner, session_id, messages, idempotent)

        async def replay(recorded: Recorded) -> tuple[ChatMessage, ...]:
            transcript = unwrap(await self._selectors.session_get(owner=owner, session_id=recorded["session_id"]))
            by_id = {m.id: m for m in transcript.messages}
            if not all(i in by_id for i in recorded["message_ids"]):
                raise MessageNotFound("The messages the first request added are gone.")
            return tuple(by_id[i] for i in recorded["message_ids"])

        async def remember(added: tuple[ChatMessage, ...]) -> None:
            await self._guard.settle(owner, idempotent, _appended(session_id, added))

        stored = None
        if idempotent is not None:  # a key still pending whose messages were stored: replayed
            stored = functools.partial(self._store.keyed_write, session_id, owner=owner, key=idempotent.key_id)
        return await self._guard.once(owner, idempotent, append, replay=replay, then=remember, stored=stored)

    async def _append(
        self, owner: str, session_id: str, messages: Sequence[NewMessage], idempotent: IdempotentRequest | None
    ) -> tuple[ChatMessage, ...]:
        """Lock, append, release; with an Idempotency-Key the session already holds the messages
        of (its own record lost): `AnsweredBefore`, for the guard to replay them."""
        for _, content in messages:
            if len(content) > self._policy.max_content_chars:
                raise ContentTooLarge(f"The content is longer than {self._policy.max_content_chars} characters.")
        await self._bring_back(owner, session_id)
        token = uuid.uuid4().hex
        opened = unwrap(
            await self._store.begin_turn(
                session_id,
                owner=owner,
                token=token,
                lock_seconds=self._policy.turn_lock_seconds,
                history_limit=0,
                key=idempotent.key_id if idempotent is not None else None,
            )
        )
        if opened.answered is not None and idempotent is not None:
            raise self._guard.answered(idempotent, opened.answered)
        now = self._clock()
        added = tuple(ChatMessage(id=new_message_id(), role=role, content=c, created_at=now) for role, c in messages)
        if opened.session.message_count + len(added) > self._policy.max_messages_per_session:
            await self._store.release_turn(session_id, token=token)
            raise MessageLimitReached()
        try:
            unwrap(
                await self._store.append_turn(
                    session_id,
                    owner=owner,
                    token=token,
                    messages=added,
                    usage=TokenUsage(),
                    at=now,
                    keyed=self._guard.keyed(idempotent, _appended(session_id, added)) if idempotent else None,
                )
            )
        except BaseException:
            await self._store.release_turn(session_id, token=token)
            raise
        return added

    @returns_result
    async def metadata_replace(self, *, owner: str, session_id: str, metadata: Mapping[str, Any]) -> ChatSession:
        if len(orjson.dumps(dict(metadata))) > self._policy.max_metadata_bytes:
            raise PayloadTooLarge(f"The metadata is larger than {self._policy.max_metadata_bytes} bytes.")
        await self._bring_back(owner, session_id)
        session = unwrap(await self._store.set_metadata(session_id, owner=owner, metadata=metadata, at=self._clock()))
        await self._record("session.update", session)
        return session

    @returns_result
    async def message_delete(self, *, owner: str, session_id: str, message_id: str) -> ChatSession:
        await self._bring_back(owner, session_id)
        session = unwrap(
            await self._store.delete_message(session_id, owner=owner, message_id=message_id, at=self._clock())
        )
        await self._record("session.message_delete", session)
        return session

    async def _bring_back(self, owner: str, session_id: str) -> None:
        """An archived session is restored first (`SessionNotFound` when there is none)."""
        if not isinstance(await self._store.get(session_id, owner=owner), Ok):
            unwrap(await self._lifecycle.session_resume(owner=owner, session_id=session_id))

    async def _record(self, action: str, session: ChatSession) -> None:
        await self._recorder.record(
            SessionEvent(
                action=action,
                session_id=session.id,
                owner=session.owner,
                actor=owner_actor(session.owner),
                session=session,
            )
        )


def _appended(session_id: str, added: Sequence[ChatMessage]) -> dict[str, Any]:
    """What an append's Idempotency-Key remembers for its repeats: the ids of what it added."""
    return {"session_id": session_id, "message_ids": [m.id for m in added]}
