"""A turn with no session: the model asked with the messages the client gave, nothing stored.

The OpenAI-compatible Chat Completions run here. Everything but the session is as for a
session's turn: the known models, the size bounds, the model call through the same
backend (its retries and breaker), the chat span and its metrics, and the owner charged
for the tokens (for a stream cut short, for what the model was sent and each delta).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from core.errors import InvalidRequest
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


class StatelessStream:
    """Iterate `events()` once: the reply's `Delta`s, then one `StatelessDone`. Stopping early
    (the client left) stops the model; a model failure after the first delta is raised."""

    outcome = None  # nothing is stored (the pipeline's running turns have a stored outcome)

    def __init__(
        self,
        *,
        first: StreamEvent,
        events: AsyncGenerator[StreamEvent, None],
        sent: Sequence[ContextMessage],
        charge: Callable[[int], None],
    ) -> None:
        self._first = first
        self._events = events
        self._sent = sent
        self._charge = charge

    def interrupt(self) -> None:
        pass  # nothing is stored: a stop is a stop, whoever asked for it

    async def events(self) -> AsyncGenerator[Delta | StatelessDone, None]:
        deltas = 0
        event: StreamEvent | None = self._first
        try:
            while True:
                if event is None:
                    raise BackendError("The model server ended the stream without a final message.")
                if isinstance(event, StreamEnd):
                    self._charge(event.usage.input_tokens + event.usage.output_tokens)
                    yield StatelessDone(event.usage, event.finish_reason, event.model)
                    return
                deltas += 1
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


class StatelessTurns:
    """Model calls without a session, checked and charged like a session's turns."""

    def __init__(
        self,
        *,
        backend: ChatBackend,
        policy: SessionPolicy,
        limiter: OwnerLimiter,
    ) -> None:
        self._backend = backend
        self._policy = policy
        self._limiter = limiter
        self.charging: set[asyncio.Task[None]] = set()

    @returns_result
    async def complete(self, *, owner: str, request: ChatRequest) -> Completion:
        """The model's whole answer to `request`."""
        self._check(request)
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
    async def stream(self, *, owner: str, request: ChatRequest) -> StatelessStream:
        """Start the answer streamed; returns once the model's first delta has arrived."""
        self._check(request)
        with chat_span(self._policy.model_label(request.model), streaming=True):
            events = self._backend.stream(request)
            try:
                first = await first_event(events)
            except asyncio.CancelledError:  # the client left; the model had the prompt
                self._charge(owner, estimate_input_tokens(request.messages))
                raise
        return StatelessStream(
            first=first, events=events, sent=request.messages, charge=lambda tokens: self._charge(owner, tokens)
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
