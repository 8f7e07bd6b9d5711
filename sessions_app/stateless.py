"""A turn with no session: the model asked with the messages the client gave, nothing stored.

The OpenAI-compatible Chat Completions run here. Everything but the session is as for a
session's turn: the known models, the size bounds, the model call through the same
backend (its retries and breaker), the chat span and its metrics, and the owner charged
for the tokens (for a stream cut short, for what the model was sent and each delta).

With an Idempotency-Key (the native API's semantics, `IdempotencyGuard`), a repeat of an
answered request gets the first answer back without a model call, whole or streamed,
whichever way the repeat asks for it; a repeat while the first still runs is
`IdempotencyInProgress`, one with another request `IdempotencyKeyReused`. With no session
to read the answer back from, the key's record keeps the answer itself (its text, finish
reason, token counts and time): user content, so it lives `IDEMPOTENCY_TTL_SECONDS`, is
listed by the owner's export and removed by their erasure, as every idempotency record is.
Only an answer the model finished is kept; a failed or cut-short one releases the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import GatewayError, InvalidRequest
from core.observability.context import annotate
from core.result import returns_result
from limits.ports import OwnerLimiter
from llm_backend.errors import BackendError
from llm_backend.ports import (
    ChatBackend,
    ChatRequest,
    Completion,
    ContextMessage,
    Delta,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TokenUsage,
)
from sessions_app.charging import charge_later, charge_tokens
from sessions_app.context import estimate_input_tokens
from sessions_app.errors import ContentTooLarge, UnknownModel
from sessions_app.idempotency import IdempotentRequest
from sessions_app.idempotency_guard import IdempotencyGuard, Recorded
from sessions_app.policy import SessionPolicy
from sessions_app.telemetry import chat_span, count_backend_error, record_completion
from sessions_app.turn_stream import first_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StatelessDone:
    """The last event of a stateless stream."""

    usage: TokenUsage
    finish_reason: FinishReason
    model: str


@dataclass(frozen=True, slots=True)
class StatelessAnswer:
    """A stateless turn's whole answer."""

    completion: Completion
    created_at: float  # seconds since the epoch; a repeat's (same Idempotency-Key) is the first's


Settled = Callable[[StatelessAnswer | None], Awaitable[None]]


class StatelessStream:
    """Iterate `events()` once: the reply's `Delta`s, then one `StatelessDone`. Stopping early
    (the client left) stops the model; a model failure after the first delta is raised.
    `settled` hears the whole answer once the model finished, or None (failed, cut short, or
    never iterated: `close`)."""

    outcome = None  # nothing is stored (the pipeline's running turns have a stored outcome)

    def __init__(
        self,
        *,
        first: StreamEvent,
        events: AsyncGenerator[StreamEvent, None],
        sent: Sequence[ContextMessage],
        charge: Callable[[int], None],
        settled: Settled | None = None,
    ) -> None:
        self._first = first
        self._events = events
        self._sent = sent
        self._charge = charge
        self._settled = settled
        self._begun = False  # events() was iterated: it settles itself
        self.created_at = time.time()

    def interrupt(self) -> None:
        pass  # nothing is stored: a stop is a stop, whoever asked for it

    async def close(self) -> None:
        """Once the stream is over: if `events()` never began (its client left, or the
        response's start failed, before the relay did), stop the model, charge what it was sent
        and release the Idempotency-Key."""
        if self._begun:
            return
        self._begun = True
        await asyncio.shield(self._abandon())  # the key must not stay claimed: see TurnStream.close

    async def _abandon(self) -> None:
        await self._events.aclose()
        self._charge(estimate_input_tokens(self._sent))
        if self._settled is not None:
            await self._settled(None)

    async def events(self) -> AsyncGenerator[Delta | StatelessDone, None]:
        self._begun = True
        pieces: list[str] = []  # kept only for an Idempotency-Key's record
        deltas = 0
        answer: StatelessAnswer | None = None
        event: StreamEvent | None = self._first
        try:
            while True:
                if event is None:
                    raise BackendError("The model server ended the stream without a final message.")
                if isinstance(event, StreamEnd):
                    self._charge(event.usage.input_tokens + event.usage.output_tokens)
                    completion = Completion("".join(pieces), event.finish_reason, event.usage, event.model)
                    answer = StatelessAnswer(completion, self.created_at)
                    yield StatelessDone(event.usage, event.finish_reason, event.model)
                    return
                deltas += 1
                if self._settled is not None:
                    pieces.append(event.content)
                yield event
                event = await anext(self._events, None)
        except BackendError as exc:
            count_backend_error(exc)
            self._charge(estimate_input_tokens(self._sent) + deltas)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            await self._events.aclose()  # stop the model first
            self._charge(estimate_input_tokens(self._sent) + deltas)
            raise
        finally:
            await self._events.aclose()
            if self._settled is not None:
                await asyncio.shield(self._settled(answer))


class StatelessReplay:
    """A stateless stream answered before (same Idempotency-Key): its reply at once, then done."""

    outcome = None

    def __init__(self, answer: StatelessAnswer) -> None:
        self._answer = answer
        self.created_at = answer.created_at

    def interrupt(self) -> None:
        pass

    async def close(self) -> None:
        pass  # nothing was claimed or asked

    async def events(self) -> AsyncGenerator[Delta | StatelessDone, None]:
        completion = self._answer.completion
        yield Delta(completion.content)
        yield StatelessDone(completion.usage, completion.finish_reason, completion.model)


class StatelessTurns:
    """Model calls without a session, checked and charged like a session's turns."""

    def __init__(
        self,
        *,
        backend: ChatBackend,
        policy: SessionPolicy,
        limiter: OwnerLimiter,
        guard: IdempotencyGuard,
    ) -> None:
        self._backend = backend
        self._policy = policy
        self._limiter = limiter
        self._guard = guard
        self.charging: set[asyncio.Task[None]] = set()

    @returns_result
    async def complete(
        self, *, owner: str, request: ChatRequest, idempotent: IdempotentRequest | None = None
    ) -> StatelessAnswer:
        """The model's whole answer to `request` (or, a repeat of `idempotent`, its first)."""
        self._check(request)

        async def run() -> StatelessAnswer:
            return StatelessAnswer(await self._complete(owner, request), time.time())

        async def replay(recorded: Recorded) -> StatelessAnswer:
            return _answer_of(recorded)

        async def settled(answer: StatelessAnswer) -> None:
            await self._guard.settle(owner, idempotent, _recorded(answer))

        return await self._guard.once(owner, idempotent, run, replay=replay, then=settled)

    async def _complete(self, owner: str, request: ChatRequest) -> Completion:
        with chat_span(self._policy.model_label(request.model)) as span:
            started = time.perf_counter()
            try:
                completion = await self._backend.complete(request)
            except BaseException as exc:
                count_backend_error(exc)
                raise
            finally:
                annotate(backend_seconds=time.perf_counter() - started)
            record_completion(span, completion.usage, completion.finish_reason)
        self._charge(owner, completion.usage.input_tokens + completion.usage.output_tokens)
        return completion

    @returns_result
    async def stream(
        self, *, owner: str, request: ChatRequest, idempotent: IdempotentRequest | None = None
    ) -> StatelessStream | StatelessReplay:
        """Start the answer streamed; returns once the model's first delta has arrived (a repeat
        of `idempotent` at once, its first answer in one delta)."""
        self._check(request)

        async def start() -> StatelessStream | StatelessReplay:
            return await self._stream(owner, request, idempotent)

        async def replay(recorded: Recorded) -> StatelessStream | StatelessReplay:
            return StatelessReplay(_answer_of(recorded))

        return await self._guard.once(owner, idempotent, start, replay=replay)

    async def _stream(self, owner: str, request: ChatRequest, idempotent: IdempotentRequest | None) -> StatelessStream:
        async def settled(answer: StatelessAnswer | None) -> None:
            try:
                await self._guard.settle(owner, idempotent, _recorded(answer))
            except GatewayError:
                logger.warning("could not settle a stateless stream's Idempotency-Key")

        with chat_span(self._policy.model_label(request.model), streaming=True):
            events = self._backend.stream(request)
            try:
                first = await first_event(events)
            except asyncio.CancelledError:  # the client left; the model had the prompt
                self._charge(owner, estimate_input_tokens(request.messages))
                raise
        return StatelessStream(
            first=first,
            events=events,
            sent=request.messages,
            charge=lambda tokens: self._charge(owner, tokens),
            settled=settled if idempotent is not None else None,
        )

    def _check(self, request: ChatRequest) -> None:
        policy = self._policy
        if not policy.knows(request.model):
            offered = sorted(policy.known_models | {policy.default_model})
            raise UnknownModel(
                f"The model is not offered; choose one of: {', '.join(offered)}.", extra={"param": "model"}
            )
        if not request.messages:
            raise InvalidRequest("messages: must not be empty.", extra={"param": "messages"})
        if len(request.messages) > policy.context_max_messages:
            raise InvalidRequest(
                f"messages: at most {policy.context_max_messages} are allowed.", extra={"param": "messages"}
            )
        if sum(len(m.content) for m in request.messages) > policy.context_max_chars:
            raise ContentTooLarge(
                f"The messages are longer than {policy.context_max_chars} characters in all.",
                extra={"param": "messages"},
            )
        max_tokens = request.params.max_tokens
        if max_tokens is not None and not 1 <= max_tokens <= policy.max_output_tokens:
            raise InvalidRequest(
                f"max_tokens: must be between 1 and {policy.max_output_tokens}.", extra={"param": "max_tokens"}
            )
        annotate(model=policy.model_label(request.model))

    def _charge(self, owner: str, tokens: int) -> None:
        """Charge the owner's tokens off the reply's path: the count is for their next requests."""
        charge_later(self.charging, charge_tokens(self._limiter, owner, tokens, what="a stateless turn"))


def _recorded(answer: StatelessAnswer | None) -> Recorded | None:
    """What an Idempotency-Key keeps of a stateless answer: the answer itself (there is no
    session to read it back from). Only an answer the model finished is kept."""
    if answer is None:
        return None
    completion = answer.completion
    return {
        "stateless": {
            "content": completion.content,
            "finish_reason": completion.finish_reason.value,
            "usage": [completion.usage.input_tokens, completion.usage.output_tokens],
            "model": completion.model,
            "created_at": answer.created_at,
        }
    }


def _answer_of(recorded: Recorded) -> StatelessAnswer:
    kept: dict[str, Any] = recorded["stateless"]
    completion = Completion(
        content=kept["content"],
        finish_reason=FinishReason(kept["finish_reason"]),
        usage=TokenUsage(*kept["usage"]),
        model=kept["model"],
    )
    return StatelessAnswer(completion, kept["created_at"])
