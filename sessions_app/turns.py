"""Turns: lock and load, ask the model (whole or streamed), commit, charge, remember the answer."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from core.errors import InvalidRequest, StoreUnavailable
from core.observability.context import annotate
from core.observability.tracing import child_span
from core.result import Err, returns_result, unwrap
from limits.ports import OwnerLimiter
from llm_backend.ports import ChatBackend, ChatRequest, FinishReason, GenerationParams, TokenUsage
from sessions_app.charging import charge_later, charge_tokens
from sessions_app.context import build_context, estimate_input_tokens
from sessions_app.domain import TurnOutcome
from sessions_app.errors import (
    ContentTooLarge,
    HistoryMovedOn,
    MessageLimitReached,
    ModelMismatch,
    SessionNotActive,
    SessionNotFound,
)
from sessions_app.idempotency import IdempotentRequest
from sessions_app.idempotency_guard import IdempotencyGuard, Recorded
from sessions_app.policy import SessionPolicy, new_message_id
from sessions_app.ports import ActiveSessionStore, CommitRider, SessionArchive
from sessions_app.selectors import SessionSelectors
from sessions_app.telemetry import chat_span, count_backend_error, record_completion, tracer
from sessions_app.turn_commit import OpenTurn, turn_record
from sessions_app.turn_stream import ReplayStream, TurnStream, first_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn, as an edge parsed it."""

    owner: str
    session_id: str
    content: str
    params: GenerationParams = field(default_factory=GenerationParams)
    request_id: str = ""  # passed to the model server, so its logs line up with ours
    # With an Idempotency-Key, a repeat gets the first answer without asking the model or storing
    # anything again (kept for the key's TTL).
    idempotent: IdempotentRequest | None = None
    instructions: str | None = None  # the system prompt for this turn only, in place of the session's
    # The question's and the answer's ids, when the edge names the reply before it exists; new ones otherwise.
    message_ids: tuple[str, str] | None = None
    # The message the turn must come right after, checked under the turn lock (`HistoryMovedOn` when
    # the session's newest message is another).
    follows: str | None = None
    model: str | None = None  # the session's model, as the edge expects it (`ModelMismatch` otherwise)
    # The edge's writes stored with the turn (`OpenTurn.rider`), where the store takes them.
    rider: CommitRider | None = None


class TurnService:
    """Runs one turn at a time per session, on any store and backend; see `turn_send` and `turn_stream`."""

    def __init__(
        self,
        *,
        store: ActiveSessionStore,
        backend: ChatBackend,
        archive: SessionArchive,
        policy: SessionPolicy,
        guard: IdempotencyGuard,
        limiter: OwnerLimiter,
        selectors: SessionSelectors,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._backend = backend
        self._archive = archive
        self._policy = policy
        self._guard = guard
        self._limiter = limiter
        self._selectors = selectors
        self._clock = clock
        self.charging: set[asyncio.Task[None]] = set()  # token counts still on their way

    @property
    def policy(self) -> SessionPolicy:
        return self._policy

    @returns_result
    async def turn_send(self, request: TurnRequest) -> TurnOutcome:
        """One turn: lock and load, ask the model, store question and answer together.

        Nothing is stored unless the answer is: a failed or cancelled turn
        releases its lock and leaves the session as it was, so the client can
        simply retry. With an Idempotency-Key, a repeat returns the first answer
        without asking the model or storing anything again.
        """
        owner, idempotent = request.owner, request.idempotent

        async def settled(outcome: TurnOutcome) -> None:
            await self._turn_settled(owner, idempotent, outcome)

        return await self._guard.once(
            owner,
            idempotent,
            functools.partial(self._send, request),
            replay=functools.partial(self._replay, owner),
            then=settled,
            stored=self._stored(request),
        )

    @returns_result
    async def turn_stream(self, request: TurnRequest) -> TurnStream | ReplayStream:
        """Start a streamed turn; returns once the model's first delta has arrived.

        Failures up to then (not found, turn in progress, model server down)
        come back as `Err` with nothing stored and the lock released; see
        `TurnStream` for what a stream cut short keeps. A repeat of an answered
        Idempotency-Key streams the first answer back at once.
        """

        async def replay(recorded: Recorded) -> TurnStream | ReplayStream:
            return ReplayStream(await self._replay(request.owner, recorded))

        return await self._guard.once(
            request.owner,
            request.idempotent,
            functools.partial(self._start_stream, request),
            replay=replay,
            stored=self._stored(request),
        )

    def _stored(self, request: TurnRequest) -> Callable[[], Awaitable[bytes | None]] | None:
        """The guard's look at the session for a turn stored under a key still pending."""
        if request.idempotent is None:
            return None
        return functools.partial(
            self._store.keyed_write, request.session_id, owner=request.owner, key=request.idempotent.key_id
        )

    async def _send(self, turn_request: TurnRequest) -> TurnOutcome:
        turn, request = await self._open_turn(turn_request)
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
            await self._store.release_turn(turn_request.session_id, token=turn.token)
            raise
        return await turn.commit(
            self._store,
            reply=completion.content,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            at=self._clock(),
            new_id=_id_source(turn_request.message_ids),
        )

    async def _start_stream(self, turn_request: TurnRequest) -> TurnStream:
        owner = turn_request.owner
        turn, request = await self._open_turn(turn_request)
        with chat_span(self._policy.model_label(request.model), streaming=True):
            events = self._backend.stream(request)
            try:
                first = await first_event(events)
            except BaseException as exc:
                await self._store.release_turn(turn_request.session_id, token=turn.token)
                if isinstance(exc, asyncio.CancelledError):  # the client left; the model had the prompt
                    self._charge_sent(owner, estimate_input_tokens(request.messages))
                raise
        return TurnStream(
            store=self._store,
            turn=turn,
            first=first,
            events=events,
            clock=self._clock,
            new_id=_id_source(turn_request.message_ids),
            lock_seconds=self._policy.turn_lock_seconds,
            settled=functools.partial(self._turn_settled, owner, turn_request.idempotent),
            sent_tokens=estimate_input_tokens(request.messages),
            charge_sent=functools.partial(self._charge_sent, owner),
        )

    async def _open_turn(self, turn: TurnRequest) -> tuple[OpenTurn, ChatRequest]:
        """Check the input, lock the session and build the model's request.

        With an Idempotency-Key the session already holds a turn of (stored, though the key's
        own record was lost or its answer never reached the client): `AnsweredBefore`, raised
        for the guard to replay that turn, nothing locked."""
        owner, session_id, content, params = turn.owner, turn.session_id, turn.content, turn.params
        instructions, idempotent = turn.instructions, turn.idempotent
        self._check_turn_input(content, params)
        if instructions is not None and len(instructions) > self._policy.max_system_prompt_chars:
            raise ContentTooLarge(
                f"The instructions are longer than {self._policy.max_system_prompt_chars} characters."
            )
        received_at = self._clock()
        token = secrets.token_urlsafe(16)
        with child_span(tracer, "load history"):
            try:
                begun = await self._store.begin_turn(
                    session_id,
                    owner=owner,
                    token=token,
                    lock_seconds=self._policy.turn_lock_seconds,
                    history_limit=self._policy.context_max_messages,
                    key=idempotent.key_id if idempotent is not None else None,
                )
            except BaseException:
                # Its reply lost (the connection closed under it: a cluster client reloading
                # its slot map closes every node's), the lock may be taken all the same: released
                # by its token now or once Redis is back, as a failed turn's, not left to lapse.
                await self._store.release_turn(session_id, token=token)
                raise
        if (
            isinstance(begun, Err)
            and isinstance(begun.error, SessionNotFound)
            and await self._archive.is_archived(session_id, owner=owner)
        ):
            raise SessionNotActive("The session is archived; resume it to continue the conversation.")
        history = unwrap(begun)
        if history.answered is not None and idempotent is not None:
            raise self._guard.answered(idempotent, history.answered)
        session = history.session
        if turn.model is not None and session.model != turn.model:
            await self._store.release_turn(session_id, token=token)
            raise ModelMismatch(session.model)
        if turn.follows is not None and history.last_message_id != turn.follows:
            # Under the lock, on the history loaded with it: no turn can slip in between.
            await self._store.release_turn(session_id, token=token)
            raise HistoryMovedOn()
        if session.message_count + 2 > self._policy.max_messages_per_session:
            await self._store.release_turn(session_id, token=token)
            raise MessageLimitReached()
        with child_span(tracer, "build context") as span:
            context = build_context(
                system_prompt=session.system_prompt if instructions is None else instructions,
                history=history.messages,
                new_content=content,
                max_chars=self._policy.context_max_chars,
                max_messages=self._policy.context_max_messages,
            )
            span.set_attribute("gateway.context.messages", len(context))
        annotate(model=self._policy.model_label(session.model))
        request = ChatRequest(model=session.model, messages=context, params=params, request_id=turn.request_id)
        keyed = functools.partial(self._guard.keyed, idempotent) if idempotent is not None else None
        return OpenTurn(session, owner, token, content, received_at, keyed, turn.rider), request

    def _check_turn_input(self, content: str, params: GenerationParams) -> None:
        if not content.strip():
            raise InvalidRequest("content: must not be empty.")
        if len(content) > self._policy.max_content_chars:
            raise ContentTooLarge(f"The content is longer than {self._policy.max_content_chars} characters.")
        if params.max_tokens is not None and not 1 <= params.max_tokens <= self._policy.max_output_tokens:
            raise InvalidRequest(f"max_tokens: must be between 1 and {self._policy.max_output_tokens}.")

    async def _replay(self, owner: str, recorded: Recorded) -> TurnOutcome:
        """The first answer to a repeated request, read back from the session (never stored twice)."""
        transcript = unwrap(await self._selectors.session_get(owner=owner, session_id=recorded["session_id"]))
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

    # -- after a turn -------------------------------------------------------

    async def _turn_settled(
        self, owner: str, idempotent: IdempotentRequest | None, outcome: TurnOutcome | None
    ) -> None:
        """After a turn: charge its tokens to the owner, and remember it for its Idempotency-Key
        if it completed (a cut-short or failed one may simply be retried)."""
        if outcome is not None:
            # Off the reply's path: the count is for the owner's next requests, not this one.
            charge_later(self.charging, self._charge(owner, outcome))
        if idempotent is None:
            return
        recorded = None
        if outcome is not None and outcome.finish_reason is not None:
            recorded = turn_record(
                outcome.session.id, outcome.user_message, outcome.message, outcome.usage, outcome.finish_reason
            )
        await self._guard.settle(owner, idempotent, recorded)

    def _charge_sent(self, owner: str, tokens: int) -> None:
        """Charge the input of a turn cut short before any reply: what the model was sent."""
        charge_later(self.charging, charge_tokens(self._limiter, owner, tokens, what="a cut-short turn"))

    async def _charge(self, owner: str, outcome: TurnOutcome) -> None:
        try:
            await self._limiter.charge(owner, outcome.usage.input_tokens + outcome.usage.output_tokens)
        except StoreUnavailable:  # the turn is stored: it succeeded; its tokens go uncounted
            logger.warning("could not count a turn's tokens session_id=%s", outcome.session.id)


def _id_source(message_ids: tuple[str, str] | None) -> Callable[[], str]:
    """The commit's ids: the question's, then the answer's (given, or new)."""
    return iter(message_ids).__next__ if message_ids is not None else new_message_id
