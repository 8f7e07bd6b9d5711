"""`SessionManager`, the application service behind every session view and consumer."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from core.errors import InvalidRequest, PayloadTooLarge, StoreUnavailable
from core.limits import MemoryLimiter, OwnerLimiter
from core.observability.context import annotate
from core.result import Err, Ok, returns_result, unwrap
from llm_backend.errors import BackendError
from llm_backend.ports import ChatBackend, ChatRequest, FinishReason, GenerationParams, TokenUsage
from sessions_app.context import build_context, estimate_input_tokens
from sessions_app.domain import (
    ChatSession,
    SessionPage,
    SessionStatus,
    Transcript,
    TurnOutcome,
)
from sessions_app.errors import (
    ContentTooLarge,
    MessageLimitReached,
    SessionNotActive,
    SessionNotFound,
    UnknownModel,
)
from sessions_app.idempotency import (
    Claim,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IdempotencyStore,
    IdempotentRequest,
    MemoryIdempotencyStore,
)
from sessions_app.ports import ActiveSessionStore, SessionArchive
from sessions_app.recording import SessionEvent, SessionRecorder
from sessions_app.stores.encoding import from_ms
from sessions_app.telemetry import chat_span, count_backend_error, record_completion, tracer
from sessions_app.turn_commit import OpenTurn
from sessions_app.turn_stream import ReplayStream, TurnStream


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The operator's limits; every one is a setting."""

    default_model: str = "echo"
    # The models the gateway knows (the default model always among them). A client's other
    # strings are refused, so a model name is safe as a metric label, span name and log field.
    known_models: frozenset[str] = frozenset()
    max_content_chars: int = 32_000
    max_system_prompt_chars: int = 16_000
    max_metadata_bytes: int = 4_096
    max_messages_per_session: int = 1_000
    max_sessions_per_owner: int = 1_000
    max_output_tokens: int = 8_192
    context_max_chars: int = 64_000
    context_max_messages: int = 200
    turn_lock_seconds: float = 330.0

    def knows(self, model: str) -> bool:
        return model == self.default_model or model in self.known_models

    def model_label(self, model: str) -> str:
        """The model as telemetry names it: a session stored before the operator stopped
        offering its model is counted as `other`, never under a name outside the known set."""
        return model if self.knows(model) else "other"


logger = logging.getLogger(__name__)


def owner_actor(owner: str) -> str:
    return f"owner:{owner}"


def utc_now_ms_precision() -> datetime:
    """Now, at the millisecond precision the stores keep, so every read agrees with every write."""
    return from_ms(time.time_ns() // 1_000_000)


def new_message_id() -> str:
    return secrets.token_urlsafe(12)


class SessionManager:
    """Creates sessions, runs turns and retires sessions, on any store and backend."""

    def __init__(
        self,
        *,
        store: ActiveSessionStore,
        backend: ChatBackend,
        policy: SessionPolicy,
        recorder: SessionRecorder,
        archive: SessionArchive,
        idempotency: IdempotencyStore | None = None,
        limiter: OwnerLimiter | None = None,
        idempotency_ttl: int = 86_400,
        clock: Callable[[], datetime] = utc_now_ms_precision,
    ) -> None:
        self._store = store
        self._backend = backend
        self._policy = policy
        self._recorder = recorder
        self._archive = archive
        self._idempotency = idempotency or MemoryIdempotencyStore()
        self._limiter = limiter or MemoryLimiter(requests_per_minute=0, tokens_per_minute=0, streams_per_owner=0)
        self._idempotency_ttl = idempotency_ttl
        self._charging: set[asyncio.Task[None]] = set()
        self._clock = clock

    @property
    def policy(self) -> SessionPolicy:
        return self._policy

    # -- writes -------------------------------------------------------------

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
        if idempotent is None:
            return await self._create(owner, model, system_prompt, metadata)
        result = await self._claim(owner, idempotent)
        if result is not None:  # created before: the session as it is now, archived or not
            return unwrap(await self.session_get(owner=owner, session_id=result["session_id"])).session
        try:
            session = await self._create(owner, model, system_prompt, metadata)
        except BaseException:
            await self._idempotency.release(owner, idempotent)
            raise
        await self._idempotency.complete(owner, idempotent, {"session_id": session.id}, ttl=self._idempotency_ttl)
        return session

    async def _claim(self, owner: str, idempotent: IdempotentRequest) -> dict[str, Any] | None:
        """None: this request runs; a dict: it ran before, here is what it recorded."""
        claim, result = await self._idempotency.claim(
            owner, idempotent, pending_seconds=int(self._policy.turn_lock_seconds)
        )
        if claim == Claim.PENDING:
            raise IdempotencyInProgress()
        if claim == Claim.MISMATCH:
            raise IdempotencyKeyReused()
        return result if claim == Claim.DONE else None

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
    async def turn_send(
        self,
        *,
        owner: str,
        session_id: str,
        content: str,
        params: GenerationParams | None = None,
        request_id: str = "",
        idempotent: IdempotentRequest | None = None,
    ) -> TurnOutcome:
        """One turn: lock and load, ask the model, store question and answer together.

        Nothing is stored unless the answer is: a failed or cancelled turn
        releases its lock and leaves the session as it was, so the client can
        simply retry. With an Idempotency-Key, a repeat returns the first answer
        without asking the model or storing anything again.
        """
        if idempotent is not None:
            recorded = await self._claim(owner, idempotent)
            if recorded is not None:
                return await self._replay(owner, recorded)
        try:
            outcome = await self._send(owner, session_id, content, params, request_id)
        except BaseException:
            if idempotent is not None:
                await self._idempotency.release(owner, idempotent)
            raise
        await self._turn_settled(owner, idempotent, outcome)
        return outcome

    async def _turn_settled(
        self, owner: str, idempotent: IdempotentRequest | None, outcome: TurnOutcome | None
    ) -> None:
        """After a turn: charge its tokens to the owner, and remember it for its Idempotency-Key
        if it completed (a cut-short or failed one may simply be retried)."""
        if outcome is not None:
            # Off the reply's path: the count is for the owner's next requests, not this one.
            task = asyncio.create_task(self._charge(owner, outcome))
            self._charging.add(task)
            task.add_done_callback(self._charging.discard)
        if idempotent is None:
            return
        if outcome is not None and outcome.finish_reason is not None:
            record = {
                "session_id": outcome.session.id,
                "user_message_id": outcome.user_message.id,
                "message_id": outcome.message.id,
                "usage": [outcome.usage.input_tokens, outcome.usage.output_tokens],
                "finish_reason": outcome.finish_reason.value,
            }
            await self._idempotency.complete(owner, idempotent, record, ttl=self._idempotency_ttl)
        else:
            await self._idempotency.release(owner, idempotent)

    def _charge_sent(self, owner: str, tokens: int) -> None:
        """Charge the input of a turn cut short before any reply: what the model was sent."""

        async def charge() -> None:
            try:
                await self._limiter.charge(owner, tokens)
            except StoreUnavailable:
                logger.warning("could not count a cut-short turn's tokens")

        task = asyncio.create_task(charge())
        self._charging.add(task)
        task.add_done_callback(self._charging.discard)

    async def _charge(self, owner: str, outcome: TurnOutcome) -> None:
        try:
            await self._limiter.charge(owner, outcome.usage.input_tokens + outcome.usage.output_tokens)
        except StoreUnavailable:  # the turn is stored: it succeeded; its tokens go uncounted
            logger.warning("could not count a turn's tokens session_id=%s", outcome.session.id)

    async def _replay(self, owner: str, recorded: dict[str, Any]) -> TurnOutcome:
        """The first answer to a repeated request, read back from the session (never stored twice)."""
        transcript = unwrap(await self.session_get(owner=owner, session_id=recorded["session_id"]))
        by_id = {m.id: m for m in transcript.messages}
        if recorded["user_message_id"] not in by_id or recorded["message_id"] not in by_id:
            raise SessionNotFound()
        return TurnOutcome(
            session=transcript.session,
            user_message=by_id[recorded["user_message_id"]],
            message=by_id[recorded["message_id"]],
            usage=TokenUsage(*recorded["usage"]),
            finish_reason=FinishReason(recorded["finish_reason"]),
        )

    async def _send(
        self, owner: str, session_id: str, content: str, params: GenerationParams | None, request_id: str
    ) -> TurnOutcome:
        turn, request = await self._open_turn(owner, session_id, content, params, request_id)
        try:
            with chat_span(self._policy.model_label(request.model)) as span:
                started = time.perf_counter()
                try:
                    completion = await self._backend.complete(request)
                finally:
                    annotate(backend_seconds=time.perf_counter() - started)
                record_completion(span, completion.usage, completion.finish_reason)
        except BaseException as exc:
            count_backend_error(exc)
            await self._store.release_turn(session_id, token=turn.token)
            raise
        return await turn.commit(
            self._store,
            reply=completion.content,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            at=self._clock(),
            new_id=new_message_id,
        )

    @returns_result
    async def turn_stream(
        self,
        *,
        owner: str,
        session_id: str,
        content: str,
        params: GenerationParams | None = None,
        request_id: str = "",
        idempotent: IdempotentRequest | None = None,
    ) -> TurnStream | ReplayStream:
        """Start a streamed turn; returns once the model's first delta has arrived.

        Failures up to then (not found, turn in progress, model server down)
        come back as `Err` with nothing stored and the lock released; see
        `TurnStream` for what a stream cut short keeps. A repeat of an answered
        Idempotency-Key streams the first answer back at once.
        """
        if idempotent is not None:
            recorded = await self._claim(owner, idempotent)
            if recorded is not None:
                return ReplayStream(await self._replay(owner, recorded))
        try:
            return await self._start_stream(owner, session_id, content, params, request_id, idempotent)
        except BaseException:
            if idempotent is not None:
                await self._idempotency.release(owner, idempotent)
            raise

    async def _start_stream(
        self,
        owner: str,
        session_id: str,
        content: str,
        params: GenerationParams | None,
        request_id: str,
        idempotent: IdempotentRequest | None,
    ) -> TurnStream:
        turn, request = await self._open_turn(owner, session_id, content, params, request_id)
        with chat_span(self._policy.model_label(request.model), streaming=True):
            events = self._backend.stream(request)
            started = time.perf_counter()
            try:
                first = await anext(events, None)
                annotate(backend_seconds=time.perf_counter() - started)
                if first is None:
                    raise BackendError("The model server ended the stream without answering.")
            except BaseException as exc:
                count_backend_error(exc)
                await events.aclose()
                await self._store.release_turn(session_id, token=turn.token)
                if isinstance(exc, asyncio.CancelledError):  # the client left; the model had the prompt
                    self._charge_sent(owner, estimate_input_tokens(request.messages))
                raise
        return TurnStream(
            store=self._store,
            turn=turn,
            first=first,
            events=events,
            clock=self._clock,
            new_id=new_message_id,
            lock_seconds=self._policy.turn_lock_seconds,
            settled=functools.partial(self._turn_settled, owner, idempotent),
            sent=request.messages,
        )

    async def _open_turn(
        self, owner: str, session_id: str, content: str, params: GenerationParams | None, request_id: str
    ) -> tuple[OpenTurn, ChatRequest]:
        """Check the input, lock the session and build the model's request."""
        params = params or GenerationParams()
        self._check_turn_input(content, params)
        received_at = self._clock()
        token = secrets.token_urlsafe(16)
        with tracer.start_as_current_span("load history"):
            begun = await self._store.begin_turn(
                session_id,
                owner=owner,
                token=token,
                lock_seconds=self._policy.turn_lock_seconds,
                history_limit=self._policy.context_max_messages,
            )
        if (
            isinstance(begun, Err)
            and isinstance(begun.error, SessionNotFound)
            and await self._archive.is_archived(session_id, owner=owner)
        ):
            raise SessionNotActive("The session is archived; resume it to continue the conversation.")
        transcript = unwrap(begun)
        session = transcript.session
        if session.message_count + 2 > self._policy.max_messages_per_session:
            await self._store.release_turn(session_id, token=token)
            raise MessageLimitReached()
        with tracer.start_as_current_span("build context") as span:
            context = build_context(
                system_prompt=session.system_prompt,
                history=transcript.messages,
                new_content=content,
                max_chars=self._policy.context_max_chars,
                max_messages=self._policy.context_max_messages,
            )
            span.set_attribute("gateway.context.messages", len(context))
        annotate(model=self._policy.model_label(session.model))
        request = ChatRequest(model=session.model, messages=context, params=params, request_id=request_id)
        return OpenTurn(session, owner, token, content, received_at), request

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
        await self._idempotency.forget_session(owner, session_id)
        if not (in_store or in_archive):
            raise SessionNotFound()
        await self._recorder.record(
            SessionEvent(action="session.delete", session_id=session_id, owner=owner, actor=owner_actor(owner))
        )

    # -- reads --------------------------------------------------------------

    @returns_result
    async def session_exists(self, *, owner: str, session_id: str) -> bool:
        """Whether the owner has this session, active or archived."""
        if isinstance(await self._store.get(session_id, owner=owner), Ok):
            return True
        return await self._archive.is_archived(session_id, owner=owner)

    @returns_result
    async def session_get(
        self, *, owner: str, session_id: str, offset: int = 0, limit: int | None = None
    ) -> Transcript:
        """The session with its messages (all, or `limit` from the `offset`-th, oldest first),
        from the active store or else the archive."""
        match await self._store.load(session_id, owner=owner, offset=offset, limit=limit):
            case Ok(transcript):
                return transcript
        archived = await self._archive.fetch(session_id, owner=owner)
        if archived is None:
            raise SessionNotFound()
        # An archive is one sealed object, read whole (as bounded as the session it holds).
        end = None if limit is None else offset + limit
        return Transcript(archived.session, archived.messages[offset:end])

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

    # -- rules --------------------------------------------------------------

    def _check_turn_input(self, content: str, params: GenerationParams) -> None:
        if not content.strip():
            raise InvalidRequest("content: must not be empty.")
        if len(content) > self._policy.max_content_chars:
            raise ContentTooLarge(f"The content is longer than {self._policy.max_content_chars} characters.")
        if params.max_tokens is not None and not 1 <= params.max_tokens <= self._policy.max_output_tokens:
            raise InvalidRequest(f"max_tokens: must be between 1 and {self._policy.max_output_tokens}.")

    async def close(self) -> None:
        await self._store.close()
        await self._backend.close()
