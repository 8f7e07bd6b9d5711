"""The turn pipeline: every edge's turns are admitted, run, committed and observed here.

An edge (the JSON and SSE consumer, the WebSocket consumer, and any new one) only parses
its input into a `TurnRequest` and renders what the pipeline hands it:

    refuse_if_draining()                    # first: a draining instance takes no turns
    await admit(owner)                      # the owner's rate limit, once authenticated
    turn = Turn(mode="json")                # the turn's clock starts

    outcome = await turn.reply(request)     # a whole turn: run and committed
    turn.observe()                          # its metrics and access-log facts, once
    headers = {"Server-Timing": turn.server_timing()}

    async with turn.stream(request, render):     # a streamed turn: the owner's stream count,
        send_head(turn.first_delta_timing())     # a drain ticket and a stream slot held; the
        await turn.relay(render)                 # model's first delta is in; render(Delta)...,
    turn.observe()                               # then TurnDone or TurnFailed

A stateless turn (OpenAI's Chat Completions: no session, nothing stored, the model asked
with the messages given) is a `StatelessRequest` run by `turn.complete(request)` or
`turn.stream_stateless(request, render)`, with the same holds, model call, span, metrics,
charging and Idempotency-Key (`StatelessTurns`, stateless.py); its stream ends with a
`StatelessDone`.

Failures before a stream begins are raised (`GatewayError`, `ShuttingDown` when the
instance stopped the turn; the edge answers them and calls `turn.fail(exc)`, then
`turn.observe()`); after, they are rendered as one `TurnFailed`. Below the
pipeline, `TurnService` (turns.py) guards the Idempotency-Key, asks the model, commits
the turn (`OpenTurn.commit`) and charges its tokens; `TurnStream` keeps what a stream cut
short had sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

from core.departure import ClientGone
from core.errors import GatewayError
from core.observability.context import annotate
from core.observability.context import current as current_request
from core.result import Ok, Result, unwrap
from core.shutdown import ShuttingDown, drain, taken_back
from llm_backend.ports import ChatRequest, ContextMessage, Delta, GenerationParams, TokenUsage
from sessions_app import metrics
from sessions_app.admission import admit, owner_stream, refuse_if_draining, slots
from sessions_app.domain import TurnOutcome
from sessions_app.idempotency import IdempotentRequest
from sessions_app.stateless import StatelessAnswer, StatelessDone, StatelessReplay, StatelessStream
from sessions_app.telemetry import count_tokens
from sessions_app.turn_stream import RunningTurn, TurnDone
from sessions_app.turns import TurnRequest
from sessions_app.wiring import get_session_manager

__all__ = [
    "Render",
    "StatelessAnswer",
    "StatelessDone",
    "StatelessRequest",
    "Turn",
    "TurnDone",
    "TurnEvent",
    "TurnFailed",
    "TurnRequest",
    "admit",
    "refuse_if_draining",
]


@dataclass(frozen=True, slots=True)
class StatelessRequest:
    """A turn with no session (OpenAI's Chat Completions): the model asked with `messages`,
    nothing stored."""

    owner: str
    model: str
    messages: tuple[ContextMessage, ...]
    params: GenerationParams
    request_id: str
    idempotent: IdempotentRequest | None = None  # a repeat gets the first answer (kept for the key's TTL)


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """The last event of a stream that failed after it began (or that the shutdown stopped)."""

    error: GatewayError


TurnEvent: TypeAlias = Delta | TurnDone | StatelessDone | TurnFailed
Render = Callable[[TurnEvent], Awaitable[None]]
Streamed: TypeAlias = RunningTurn | StatelessStream | StatelessReplay


class Turn:
    """One turn through the pipeline, from its arrival to its metrics."""

    def __init__(self, *, mode: str) -> None:
        self.mode = mode  # the metric label: json, sse, ws
        self.started = asyncio.get_running_loop().time()
        self.outcome = "cancelled"  # "ok", an error code, or "cancelled" when it was stopped
        self.first_delta_at: float | None = None  # loop time the first delta was rendered
        self.running: Streamed | None = None  # a streamed turn, once it began
        self._reply: TurnOutcome | None = None
        self._stateless: tuple[str, TokenUsage] | None = None  # a stateless turn's model and tokens

    @property
    def result(self) -> TurnOutcome | None:
        """What was stored (or replayed): the whole turn, a cut-short one, or None."""
        if self.running is not None:
            return self.running.outcome
        return self._reply

    # -- running --------------------------------------------------------------

    async def reply(self, request: TurnRequest) -> TurnOutcome:
        """Run the turn whole: the stored outcome, or the failure raised."""
        with _whole_turn():
            result = await get_session_manager().turns.turn_send(request)
        self._reply = unwrap(result)
        self.outcome = "ok"
        return self._reply

    async def complete(self, request: StatelessRequest) -> StatelessAnswer:
        """Run a stateless turn whole: the model's answer (nothing stored but, with an
        Idempotency-Key, the answer for its repeats), or the failure raised."""
        with _whole_turn():
            result = await get_session_manager().stateless.complete(
                owner=request.owner, request=_chat_request(request), idempotent=request.idempotent
            )
        answer = unwrap(result)
        self._stateless = (request.model, answer.completion.usage)
        self.outcome = "ok"
        return answer

    def stream(
        self,
        request: TurnRequest,
        render: Render,
        *,
        span: AbstractContextManager[object] | None = None,
    ) -> AbstractAsyncContextManager[RunningTurn]:
        """Start the turn streamed; inside, the model's first delta has arrived.

        Holds the owner's stream count, a drain ticket and a stream slot (in that order)
        until the block ends. A failure before the stream begins is raised; should the
        shutdown stop the turn after it began, the client keeps what it saw and is told
        why (`render(TurnFailed(ShuttingDown()))`). A stream the block never relayed (its client
        left first, the response's start failed) is settled as the block ends: the model stopped,
        the turn lock and the Idempotency-Key released, nothing stored, as for a turn that failed
        before its first delta. `span`: the edge's span around the turn.
        """
        start = functools.partial(get_session_manager().turns.turn_stream, request)
        # The holds' own context manager, handed over as it is: one that only re-entered it
        # would be one more generator and frame held by every open stream.
        return self._held(request.owner, start, render, span)

    def stream_stateless(
        self,
        request: StatelessRequest,
        render: Render,
        *,
        span: AbstractContextManager[object] | None = None,
    ) -> AbstractAsyncContextManager[StatelessStream | StatelessReplay]:
        """`stream` for a stateless turn: the same holds, nothing stored; the last event is a
        `StatelessDone` (or `TurnFailed`)."""
        start = functools.partial(
            get_session_manager().stateless.stream,
            owner=request.owner,
            request=_chat_request(request),
            idempotent=request.idempotent,
        )
        return self._held(request.owner, start, render, span)

    @asynccontextmanager
    async def _held(
        self,
        owner: str,
        start: Callable[[], Awaitable[Result[Any, GatewayError]]],
        render: Render,
        span: AbstractContextManager[object] | None,
    ) -> AsyncIterator[Any]:
        started = None
        async with owner_stream(owner):
            with drain.turn() as ticket:
                try:
                    with slots.slot(), span or contextlib.nullcontext():
                        started = await start()
                        if isinstance(started, Ok):
                            self.running = started.value
                            ticket.on_stop(self.running.interrupt)
                            try:
                                yield self.running
                            finally:
                                # However the block ended: a stream it never relayed (the client
                                # left, the response's start failed) would otherwise keep the
                                # model running, the turn lock and the Idempotency-Key held.
                                await self.running.close()
                except asyncio.CancelledError:
                    if not ticket.stopped:
                        raise
                    taken_back()
                    if self.running is None:  # before the stream began: nothing was stored
                        raise ShuttingDown() from None
                    # Cut short by the shutdown: the client keeps what it saw, and learns why.
                    self.outcome = ShuttingDown.code
                    await render(TurnFailed(ShuttingDown()))
                    return
        if started is not None and not isinstance(started, Ok):
            raise started.error

    async def relay(self, render: Render) -> None:
        """Render each event of the running turn as it comes: its deltas, then `TurnDone`, or
        `TurnFailed` when the model server fails. Stopping this coroutine (cancellation) stops
        the model and stores what was rendered, as `TurnStream` describes."""
        assert self.running is not None
        events = self.running.events()
        try:
            async for event in events:
                await render(event)
                if type(event) is Delta:
                    if self.first_delta_at is None:
                        self.first_delta_at = asyncio.get_running_loop().time()
                else:
                    self.outcome = "ok"
                    if type(event) is StatelessDone:
                        self._stateless = (event.model, event.usage)
        except GatewayError as exc:
            self.outcome = exc.code
            await render(TurnFailed(exc))
        finally:
            # Runs the stream's own settling (the partial reply) even when we are cancelled.
            await asyncio.shield(events.aclose())

    # -- observing ------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """The turn ended with `exc` (before anything was rendered, or instead of it); one whose
        client left before its stream began stays `cancelled`."""
        if not isinstance(exc, ClientGone):
            self.outcome = exc.code if isinstance(exc, GatewayError) else "internal_error"

    def observe(self) -> None:
        """Metrics and access-log facts of the finished turn (never its content)."""
        metrics.TURNS_BY(self.mode, self.outcome).inc()
        if self.first_delta_at is not None:
            metrics.FIRST_DELTA_BY(self.mode).observe(self.first_delta_at - self.started)
        stored = self.result
        used = (stored.session.model, stored.usage) if stored is not None else self._stateless
        if used is not None:
            model, usage = used
            count_tokens(get_session_manager().policy.model_label(model), usage)
            annotate(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        annotate(outcome=self.outcome)

    def server_timing(self) -> str:
        """A whole turn's Server-Timing: the gateway's own share and the model server's, in
        milliseconds; the gateway's share also goes to its histogram."""
        backend = self._backend_seconds()
        overhead = max(0.0, asyncio.get_running_loop().time() - self.started - backend)
        metrics.OVERHEAD.observe(overhead)
        return f"gateway;dur={overhead * 1000:.2f}, backend;dur={backend * 1000:.2f}"

    def first_delta_timing(self) -> str:
        """A stream's Server-Timing, known when its head goes out: the shares of the wait for
        the first delta."""
        backend = self._backend_seconds()
        overhead = max(0.0, asyncio.get_running_loop().time() - self.started - backend)
        return f'gateway;dur={overhead * 1000:.2f}, backend;desc="first delta";dur={backend * 1000:.2f}'

    @staticmethod
    def _backend_seconds() -> float:
        info = current_request()
        return info.backend_seconds if info else 0.0


def _chat_request(request: StatelessRequest) -> ChatRequest:
    return ChatRequest(
        model=request.model, messages=request.messages, params=request.params, request_id=request.request_id
    )


@contextlib.contextmanager
def _whole_turn() -> Iterator[None]:
    """A drain ticket held while a whole (not streamed) turn runs; should the shutdown stop
    the turn, nothing was stored, and the edge is told so (`ShuttingDown`)."""
    with drain.turn() as ticket:
        try:
            yield
        except asyncio.CancelledError:
            if not ticket.stopped:
                raise
            taken_back()
            raise ShuttingDown() from None
