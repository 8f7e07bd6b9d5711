"""What the SSE and WebSocket edges share: the per-process stream cap and the relay of a turn."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.errors import GatewayError, ServiceUnavailable
from core.observability.context import annotate
from core.problems import problem_for_exception
from limits.wiring import get_limiter
from llm_backend.ports import Delta
from sessions_app import metrics
from sessions_app.api import presenters
from sessions_app.domain import TurnOutcome
from sessions_app.telemetry import count_tokens
from sessions_app.turn_stream import RunningTurn, TurnDone
from sessions_app.wiring import get_session_manager

SendFrame = Callable[[str, dict[str, Any]], Awaitable[None]]


class TooManyStreams(ServiceUnavailable):
    code = "too_many_streams"
    title = "Too many streams"
    default_detail = "The gateway is streaming as many replies as it can; retry shortly."


class StreamSlots:
    """A per-process cap on concurrent streams, so an overload is a fast 503, not a slowdown
    for everyone. One event loop per process: a plain counter is enough."""

    def __init__(self) -> None:
        self.open = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.open >= settings.MAX_CONCURRENT_STREAMS:
            raise TooManyStreams()
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


slots = StreamSlots()


@asynccontextmanager
async def owner_stream(owner: str) -> AsyncIterator[None]:
    """Count the stream against the owner's limit (across instances) while it runs."""
    stream_id = uuid.uuid4().hex
    limiter = get_limiter()
    await limiter.open_stream(owner, stream_id)
    try:
        yield
    finally:
        with contextlib.suppress(GatewayError):
            await limiter.close_stream(owner, stream_id)


metrics.OPEN_STREAMS.set_function(lambda: slots.open)


@dataclass
class Relayed:
    """How a relayed turn went, for its metrics and access-log line."""

    outcome: str = "cancelled"  # "ok", an error code, or "cancelled" when it was stopped
    first_delta_at: float | None = None  # loop time the first delta went out


async def relay_turn(stream: RunningTurn, send_frame: SendFrame, relayed: Relayed) -> None:
    """Send each event of a running turn as a `delta`, `done` or `error` frame as it comes.

    Stopping this coroutine (cancellation) stops the model and stores what was
    sent, as `TurnStream` describes; `relayed` says how far it got.
    """
    events: AsyncGenerator[Delta | TurnDone, None] = stream.events()
    try:
        async for event in events:
            if isinstance(event, Delta):
                await send_frame("delta", {"content": event.content})
                if relayed.first_delta_at is None:
                    relayed.first_delta_at = asyncio.get_running_loop().time()
            else:
                await send_frame("done", presenters.turn(event.outcome))
                relayed.outcome = "ok"
    except GatewayError as exc:
        relayed.outcome = exc.code
        body, _ = problem_for_exception(exc)
        await send_frame("error", body)
    finally:
        # Runs the stream's own settling (the partial reply) even when we are cancelled.
        await asyncio.shield(events.aclose())


def observe_turn(*, mode: str, outcome: str, started: float, relayed: Relayed | None, turn: TurnOutcome | None) -> None:
    """Metrics and access-log facts of one finished turn (never its content)."""
    metrics.TURNS.labels(mode=mode, outcome=outcome).inc()
    if relayed is not None and relayed.first_delta_at is not None:
        metrics.FIRST_DELTA.labels(mode=mode).observe(relayed.first_delta_at - started)
    if turn is not None:
        count_tokens(get_session_manager().policy.model_label(turn.session.model), turn.usage)
        annotate(input_tokens=turn.usage.input_tokens, output_tokens=turn.usage.output_tokens)
    annotate(outcome=outcome)
