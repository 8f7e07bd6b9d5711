"""`/v1/responses`: create a response (whole or streamed), read it, delete it, list its input.

An edge like the native turn consumer: it parses, picks the session (`ResponsesService`),
hands the turn to the turn pipeline and renders what comes back in OpenAI's shapes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from core.errors import GatewayError
from core.observability.context import annotate
from llm_backend.ports import ContextMessage, Delta, Role
from openai_api.errors import InvalidParam, error_for_exception
from openai_api.http import OpenAIConsumer, integer_param
from openai_api.idempotency import idempotent_request, stable_id
from openai_api.responses import present
from openai_api.responses.records import ResponseRecord, new_response_id
from openai_api.responses.request import ResponseRequest, parse_response_request
from openai_api.responses.service import (
    RecordRider,
    Target,
    finished,
    missing,
    new_message_ids,
    response_id_for,
    wrong_model,
)
from openai_api.responses.stream import EventWriter
from openai_api.responses.wiring import get_responses_service
from sessions_app.pipeline import (
    StatelessDone,
    StatelessRequest,
    Turn,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnRequest,
)
from sessions_app.public import (
    HistoryMovedOn,
    IdempotentRequest,
    ModelMismatch,
    SessionNotActive,
    SessionNotFound,
    TurnOutcome,
)

logger = logging.getLogger(__name__)


class ResponsesConsumer(OpenAIConsumer):
    """`POST /v1/responses`."""

    methods = {"POST": "create"}
    turn = True

    async def create(self) -> None:
        # Every failure is observed, as on the native API: the turn's clock starts at once.
        turn = Turn(mode="json")
        self._target: Target | None = None
        try:
            data = await self.read_json()
            request = parse_response_request(data)
            turn.mode = "sse" if request.stream else "json"
            if request.store:
                await self._stored(turn, request)
            else:
                await self._stateless(turn, request, data)
        except BaseException as exc:
            if self._target is not None and turn.result is None:  # nothing stored: a session started for it goes
                await asyncio.shield(get_responses_service().discard(owner=self.owner, target=self._target))
            if not isinstance(exc, asyncio.CancelledError) and turn.outcome == "cancelled":
                turn.fail(exc)
                turn.observe()
            raise

    async def _stored(self, turn: Turn, request: ResponseRequest) -> None:
        content = request.stored_content()
        key = self.decoded_header(b"idempotency-key")
        service = get_responses_service()
        target = self._target = await service.target(owner=self.owner, request=request, idempotency_key=key)
        annotate(session_id=target.session_id)  # the access line's, as a native turn's
        response_id = response_id_for(self.owner, key)
        rider = service.rider(owner=self.owner, response_id=response_id, request=request)
        turn_request = TurnRequest(
            owner=self.owner,
            session_id=target.session_id,
            content=content,
            params=request.params,
            request_id=self.request_id(),
            idempotent=IdempotentRequest.of(
                key,
                "v1.responses",
                target.session_id,
                content,
                request.turn_instructions,
                request.params.max_tokens,
                request.params.temperature,
                list(request.params.stop),
                request.metadata,
                target.follows,
                request.model,  # a repeat naming another model is refused, as before, not replayed
            ),
            instructions=request.turn_instructions,
            message_ids=new_message_ids(),
            follows=target.follows,
            model=request.model,
            rider=rider,
        )
        for resumed in (False, True):
            try:
                if request.stream:
                    await _Streamed(self, turn, request, target, response_id, rider).run(turn_request)
                else:
                    await self._reply(turn, request, turn_request, response_id, rider)
                return
            except SessionNotActive:
                # Archived or ended: brought back, then the turn once more (an active session,
                # the usual one, costs no lookup before its turn).
                if resumed or target.created:
                    raise
            except SessionNotFound:
                if target.created:
                    raise
                raise missing(request) from None
            except ModelMismatch as exc:
                raise wrong_model(exc) from None
            except HistoryMovedOn:
                # Checked under the turn lock: of two continuations of one response, one runs.
                raise InvalidParam(
                    "previous_response_id", "is not the latest response of its conversation; continue from the latest"
                ) from None
            await service.resume(owner=self.owner, request=request, target=target)

    async def _stateless(self, turn: Turn, request: ResponseRequest, body: dict[str, Any]) -> None:
        """`store: false`: the input is the whole context, nothing is stored (the pipeline's
        stateless turn, as Chat Completions run) but, with an Idempotency-Key, the answer for
        the key's repeats (openai_api.idempotency)."""
        key = self.decoded_header(b"idempotency-key")
        system = request.turn_instructions
        stateless = StatelessRequest(
            owner=self.owner,
            model=request.model,
            messages=(
                *([ContextMessage(Role.SYSTEM, system)] if system else []),
                *(ContextMessage(Role(m.role), m.text) for m in request.conversation_messages),
            ),
            params=request.params,
            request_id=self.request_id(),
            idempotent=idempotent_request(key, "v1.responses.unstored", body),
        )
        if not stateless.messages or stateless.messages[-1].role == Role.SYSTEM:
            raise InvalidParam("input", "must hold at least one user or assistant message")
        record = _unstored(self.owner, request, key)
        if request.stream:
            await _Streamed(self, turn, request, None, record.id).run_stateless(stateless, record)
            return
        answer = await turn.complete(stateless)
        turn.observe()
        completion = answer.completion
        status, reason = finished(completion.finish_reason)
        done = dataclasses.replace(
            record,
            status=status,
            incomplete_reason=reason,
            created_at=answer.created_at,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
        )
        shown = present.response(done, stored=False, output=completion.content, completed_at=time.time())
        await self.send_json(200, shown, headers={"Server-Timing": turn.server_timing()})

    async def _reply(
        self,
        turn: Turn,
        request: ResponseRequest,
        turn_request: TurnRequest,
        response_id: str,
        rider: RecordRider | None,
    ) -> None:
        outcome = await turn.reply(turn_request)
        turn.observe()
        record = await get_responses_service().keep(
            owner=self.owner, response_id=response_id, request=request, outcome=outcome, rider=rider
        )
        body = present.response(record, stored=True, output=outcome.message.content, completed_at=time.time())
        await self.send_json(200, body, headers={"Server-Timing": turn.server_timing()})


class _Streamed:
    """One streamed response: the events as the turn runs, and its record once it is stored."""

    def __init__(
        self,
        consumer: ResponsesConsumer,
        turn: Turn,
        request: ResponseRequest,
        target: Target | None,  # None: store false
        response_id: str,
        rider: RecordRider | None = None,  # the record saved with the turn (`ResponsesService.rider`)
    ) -> None:
        self.consumer = consumer
        self.turn = turn
        self.request = request
        self.target = target
        self.response_id = response_id
        self.rider = rider
        self.writer = EventWriter(consumer.send_event, stored=target is not None)
        self.record: ResponseRecord | None = None
        self.kept = False

    async def run(self, turn_request: TurnRequest) -> None:
        consumer = self.consumer
        assert self.target is not None
        async with consumer.unless_gone(self.turn.stream(turn_request, self.render)) as running:
            await self._head()
            user_id, reply_id = turn_request.message_ids or ("", "")
            if running.outcome is not None:  # a repeat of an answered Idempotency-Key
                user_id, reply_id = running.outcome.user_message.id, running.outcome.message.id
            self.record = ResponseRecord(
                id=self.response_id,
                owner=consumer.owner,
                session_id=self.target.session_id,
                model=self.request.model,
                input_message_id=user_id,
                output_message_id=reply_id,
                status="in_progress",
                created_at=time.time(),
                instructions=self.request.turn_instructions,
                metadata=self.request.metadata,
                previous_response_id=self.request.previous_response_id,
                temperature=self.request.params.temperature,
                max_output_tokens=self.request.params.max_tokens,
            )
            await self._relay()
        self.turn.observe()
        await consumer.send_body(b"", more_body=False)

    async def run_stateless(self, request: StatelessRequest, record: ResponseRecord) -> None:
        async with self.consumer.unless_gone(self.turn.stream_stateless(request, self.render)) as running:
            await self._head()
            self.record = dataclasses.replace(record, created_at=running.created_at)  # a repeat's: the first's
            await self._relay()
        self.turn.observe()
        await self.consumer.send_body(b"", more_body=False)

    async def _head(self) -> None:
        # From here on the answer is a 200 event stream; failures become `error` events.
        await self.consumer.open_event_stream([(b"server-timing", self.turn.first_delta_timing().encode())])

    async def _relay(self) -> None:
        """The opening events (written with the first of the turn's), then the turn's, until it ends or
        the client leaves."""
        assert self.record is not None
        self.writer.begin(self.record)
        try:
            await self.consumer.relay_until_gone(self.turn.relay(self.render), self._relay_failed)
        finally:
            if not self.kept and self.turn.result is not None:  # a shield is a task: only when needed
                await asyncio.shield(self._keep_cut_short())

    async def _relay_failed(self, exc: Exception) -> None:
        logger.exception("response stream failed")
        self.turn.outcome = "internal_error"
        _, body, _ = error_for_exception(exc)
        await self.writer.error(body["error"]["code"], body["error"]["message"])

    async def render(self, event: TurnEvent) -> None:
        assert self.record is not None or isinstance(event, TurnFailed)
        if type(event) is Delta:
            await self.consumer.send_event(self.writer.delta(event.content))
        elif type(event) is TurnDone:
            await self._end(event.outcome, failed=False)
        elif type(event) is StatelessDone:
            assert self.record is not None
            status, reason = finished(event.finish_reason)
            self.record = dataclasses.replace(
                self.record,
                status=status,
                incomplete_reason=reason,
                input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens,
            )
            await self.writer.end(self.record, completed_at=time.time())
        else:
            assert isinstance(event, TurnFailed)
            await self._fail(event.error)

    async def _end(self, outcome: TurnOutcome, *, failed: bool) -> None:
        self.kept = True
        self.record = await get_responses_service().keep(
            owner=self.consumer.owner,
            response_id=self.response_id,
            request=self.request,
            outcome=outcome,
            failed=failed,
            rider=self.rider,
        )
        await self.writer.end(self.record, completed_at=time.time())

    async def _fail(self, error: GatewayError) -> None:
        await self.writer.error(error.code, error.detail)
        stored = self.turn.result
        if stored is not None and self.record is not None:
            await self._end(stored, failed=True)
        elif self.target is None and self.record is not None:  # store false: nothing to keep
            self.record = dataclasses.replace(self.record, status="failed")
            await self.writer.end(self.record, completed_at=time.time())

    async def _keep_cut_short(self) -> None:
        """A reply cut short by the client is kept in the session (cancelled): so is its response."""
        stored = self.turn.result
        if stored is None or self.kept:
            return
        self.kept = True
        try:
            await get_responses_service().keep(
                owner=self.consumer.owner,
                response_id=self.response_id,
                request=self.request,
                outcome=stored,
                rider=self.rider,
            )
        except GatewayError:
            logger.warning("could not record a cut-short response session_id=%s", stored.session.id)


def _unstored(owner: str, request: ResponseRequest, idempotency_key: str | None) -> ResponseRecord:
    """The record a `store: false` response would have: never saved, only presented. With an
    Idempotency-Key, its ids are the same for every repeat."""
    if idempotency_key is None:
        response_id, (_, reply_id) = new_response_id(), new_message_ids()
    else:
        response_id = "resp_" + stable_id("response.unstored", owner, idempotency_key)
        reply_id = stable_id("response.unstored.output", owner, idempotency_key, length=16)
    return ResponseRecord(
        id=response_id,
        owner=owner,
        session_id="",
        model=request.model,
        input_message_id="",
        output_message_id=reply_id,
        status="in_progress",
        created_at=time.time(),
        instructions=request.turn_instructions,
        metadata=request.metadata,
        temperature=request.params.temperature,
        max_output_tokens=request.params.max_tokens,
    )


class ResponseConsumer(OpenAIConsumer):
    """`GET` and `DELETE /v1/responses/{id}`."""

    methods = {"GET": "retrieve", "DELETE": "delete"}

    async def retrieve(self) -> None:
        found = await get_responses_service().find(owner=self.owner, response_id=self.route_kwarg("response_id"))
        await self.send_json(
            200, present.response(found.record, stored=True, output=found.answer, completed_at=found.record.created_at)
        )

    async def delete(self) -> None:
        response_id = self.route_kwarg("response_id")
        await get_responses_service().delete(owner=self.owner, response_id=response_id)
        await self.send_json(200, {"id": response_id, "object": "response.deleted", "deleted": True})


class ResponseInputItemsConsumer(OpenAIConsumer):
    """`GET /v1/responses/{id}/input_items`: the one user message a stored response appended."""

    methods = {"GET": "list_items"}

    async def list_items(self) -> None:
        integer_param(self.query(), "limit", default=20, low=1, high=100)
        found = await get_responses_service().find(owner=self.owner, response_id=self.route_kwarg("response_id"))
        item = present.input_message(found.record.input_message_id, found.question)
        after = self.query().get("after")
        data = [] if after == item["id"] else [item]
        await self.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else "",
                "last_id": data[-1]["id"] if data else "",
                "has_more": False,
            },
        )
