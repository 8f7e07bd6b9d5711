"""Responses over sessions: the session a response runs in, its record, and reading it back.

A response is a turn of a session (a conversation): `conversation` names the session,
`previous_response_id` the session of that response (only its latest: the turn follows that
response's answer, which the turn lock checks is still the session's newest message), and
neither starts a new one. The record keeps ids, counts and what the response object echoes; the question and
the answer are the session's messages, read back from it (or from its archive).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass

from core.result import Err, unwrap
from openai_api.errors import ConversationNotFound, InvalidParam
from openai_api.responses.errors import ResponseNotFound
from openai_api.responses.records import ResponseRecord, ResponseStore, is_response_id, new_response_id
from openai_api.responses.request import ResponseRequest
from sessions_app.public import (
    FinishReason,
    IdempotentRequest,
    MessageStatus,
    ModelMismatch,
    SessionNotFound,
    SideWrite,
    TurnOutcome,
    UnknownModel,
    get_session_manager,
    get_session_store,
)


@dataclass(frozen=True, slots=True)
class Target:
    """The session a response runs in."""

    session_id: str
    created: bool  # started for this response (without an Idempotency-Key): removed should its turn fail
    follows: str | None = None  # previous_response_id's answer: the turn must come right after it


@dataclass(frozen=True, slots=True)
class Found:
    """A stored response with its question and answer, as its session holds them now."""

    record: ResponseRecord
    question: str
    answer: str


def new_message_ids() -> tuple[str, str]:
    """The ids of a response's question and answer, chosen before the answer exists (the
    stream names its output item first); the same shape as the sessions' own."""
    return secrets.token_urlsafe(12), secrets.token_urlsafe(12)


def response_id_for(owner: str, idempotency_key: str | None) -> str:
    """A new response's id; with an Idempotency-Key, the same id for every repeat of it."""
    if idempotency_key is None:
        return new_response_id()
    digest = hashlib.sha256(b"v1 response\0" + owner.encode() + b"\0" + idempotency_key.encode())
    return "resp_" + digest.hexdigest()[:32]


def ending(outcome: TurnOutcome, *, failed: bool = False) -> tuple[str, str | None]:
    """The response's status and `incomplete_details.reason` for a stored turn."""
    if failed or (outcome.finish_reason is None and outcome.message.status == MessageStatus.INCOMPLETE):
        return "failed", None
    if outcome.finish_reason is None:
        return "cancelled", None
    return finished(outcome.finish_reason)


def finished(reason: FinishReason) -> tuple[str, str | None]:
    """The status and `incomplete_details.reason` of a reply the model finished."""
    if reason == FinishReason.LENGTH:
        return "incomplete", "max_output_tokens"
    if reason == FinishReason.CONTENT_FILTER:
        return "incomplete", "content_filter"
    return "completed", None


def missing(request: ResponseRequest) -> Exception:
    """What a response answers when the session it names is gone."""
    if request.session_id is not None:
        return ConversationNotFound()
    return ResponseNotFound("previous_response_id")


def wrong_model(error: ModelMismatch) -> InvalidParam:
    return InvalidParam("model", f"must be the conversation's model, {error.model}")


class ResponsesService:
    def __init__(self, *, records: ResponseStore, ttl: int) -> None:
        self._records = records
        self._ttl = ttl  # a session's keys' safety-net TTL: a record lives no longer than they do

    @property
    def records(self) -> ResponseStore:
        return self._records

    @property
    def ttl(self) -> int:
        return self._ttl

    async def target(self, *, owner: str, request: ResponseRequest, idempotency_key: str | None) -> Target:
        """The session the response runs in. A named one is not looked up here: its turn finds
        it (checking its model, `TurnRequest.model`), and one it finds archived or ended is
        brought back by `resume` before the turn runs again."""
        if request.session_id is not None:
            return Target(request.session_id, created=False)
        if request.previous_response_id is not None:
            # Whether its answer is still the newest message is the turn's to check, under its
            # lock (a check here would race).
            record = await self._continued(owner, request.previous_response_id)
            return Target(record.session_id, created=False, follows=record.output_message_id)
        # With an Idempotency-Key the session stays should the turn fail: the retry finds it.
        return Target(await self._start(owner, request.model, idempotency_key), created=idempotency_key is None)

    async def resume(self, *, owner: str, request: ResponseRequest, target: Target) -> None:
        """Bring back the target's session, which its turn found archived (or ended)."""
        match await get_session_manager().session_resume(owner=owner, session_id=target.session_id):
            case Err(SessionNotFound()):
                raise missing(request)
            case Err(error):
                raise error

    async def _continued(self, owner: str, response_id: str) -> ResponseRecord:
        record = await self._records.get(response_id, owner=owner) if is_response_id(response_id) else None
        if record is None:
            raise ResponseNotFound("previous_response_id")
        return record

    async def _start(self, owner: str, model: str, idempotency_key: str | None) -> str:
        idempotent = IdempotentRequest.of(idempotency_key, "v1.responses.session", model)
        if idempotent is not None:
            # Its own key beside the turn's: a retry finds this session, then the turn's answer.
            idempotent = dataclasses.replace(idempotent, key=idempotent.key + "\0session")
        created = await get_session_manager().session_create(owner=owner, model=model, idempotent=idempotent)
        if isinstance(created, Err) and isinstance(created.error, UnknownModel):
            raise InvalidParam("model", "is not offered by this gateway; GET /v1/models lists those that are")
        return unwrap(created).id

    async def discard(self, *, owner: str, target: Target) -> None:
        """Remove a session started for a response whose turn stored nothing."""
        if target.created:
            await get_session_manager().session_delete(owner=owner, session_id=target.session_id)

    def rider(self, *, owner: str, response_id: str, request: ResponseRequest) -> RecordRider | None:
        """The response's record to ride its turn's append (`TurnRequest.rider`): saved with the
        turn, in one round trip, where the session store takes this store's writes (one Redis,
        or both in process); None elsewhere (a Redis Cluster), where `keep` saves it after."""
        target = self._records.side_write_target
        if target is None or target != get_session_store().side_write_target:
            return None
        return RecordRider(self, owner=owner, response_id=response_id, request=request)

    def record(
        self, *, owner: str, response_id: str, request: ResponseRequest, outcome: TurnOutcome, failed: bool = False
    ) -> ResponseRecord:
        """The record of the stored turn as the response `response_id`."""
        status, reason = ending(outcome, failed=failed)
        return ResponseRecord(
            id=response_id,
            owner=owner,
            session_id=outcome.session.id,
            model=outcome.session.model,
            input_message_id=outcome.user_message.id,
            output_message_id=outcome.message.id,
            status=status,
            created_at=outcome.user_message.created_at.timestamp(),
            input_tokens=outcome.usage.input_tokens,
            output_tokens=outcome.usage.output_tokens,
            incomplete_reason=reason,
            instructions=request.turn_instructions,
            metadata=request.metadata,
            previous_response_id=request.previous_response_id,
            temperature=request.params.temperature,
            max_output_tokens=request.params.max_tokens,
        )

    async def keep(
        self,
        *,
        owner: str,
        response_id: str,
        request: ResponseRequest,
        outcome: TurnOutcome,
        failed: bool = False,
        rider: RecordRider | None = None,
    ) -> ResponseRecord:
        """Record the stored turn as the response `response_id`: saved now, unless `rider` saved
        this very record with the turn (not for a repeat's answer, which no append stored)."""
        ridden = rider.record if rider is not None else None
        if (
            ridden is not None
            and ridden.output_message_id == outcome.message.id
            and (ridden.status, ridden.incomplete_reason) == ending(outcome, failed=failed)
        ):
            return ridden  # the rest of it is the turn's, as committed
        record = self.record(owner=owner, response_id=response_id, request=request, outcome=outcome, failed=failed)
        await self._records.save(record, ttl=self._ttl)
        return record

    async def find(self, *, owner: str, response_id: str) -> Found:
        record = await self._records.get(response_id, owner=owner) if is_response_id(response_id) else None
        if record is None:
            raise ResponseNotFound()
        transcript = await get_session_manager().session_get(owner=owner, session_id=record.session_id)
        if isinstance(transcript, Err):
            if isinstance(transcript.error, SessionNotFound):
                await self._records.forget_session(owner, record.session_id)  # the session is gone
                raise ResponseNotFound()
            raise transcript.error
        by_id = {m.id: m.content for m in transcript.value.messages}
        if record.input_message_id not in by_id or record.output_message_id not in by_id:
            raise ResponseNotFound()
        return Found(record, by_id[record.input_message_id], by_id[record.output_message_id])

    async def delete(self, *, owner: str, response_id: str) -> None:
        if not (is_response_id(response_id) and await self._records.delete(response_id, owner=owner)):
            raise ResponseNotFound()


class RecordRider:
    """A response's record as its turn's `CommitRider`: `record` is the one the turn's append
    carried (None until the turn is committed)."""

    def __init__(self, service: ResponsesService, *, owner: str, response_id: str, request: ResponseRequest) -> None:
        self._service = service
        self._owner = owner
        self._response_id = response_id
        self._request = request
        self.record: ResponseRecord | None = None

    def __call__(self, turn: TurnOutcome) -> SideWrite:
        service = self._service
        self.record = service.record(
            owner=self._owner, response_id=self._response_id, request=self._request, outcome=turn
        )
        return service.records.side_write(self.record, ttl=service.ttl)
