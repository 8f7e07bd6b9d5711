"""A streamed turn in flight: relays the model's deltas and stores what the client saw."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.departure import until_departure
from core.errors import GatewayError
from core.observability.context import annotate
from llm_backend.errors import BackendError
from llm_backend.ports import Delta, FinishReason, StreamEnd, StreamEvent
from sessions_app.domain import MessageStatus, TokenUsage, TurnOutcome
from sessions_app.ports import ActiveSessionStore
from sessions_app.telemetry import count_backend_error
from sessions_app.turn_commit import OpenTurn

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnDone:
    """The last event of a streamed turn: what was stored."""

    outcome: TurnOutcome


class RunningTurn(Protocol):
    """A streamed turn to relay: `TurnStream`, or a `ReplayStream` of an earlier answer."""

    outcome: TurnOutcome | None

    def events(self) -> AsyncGenerator[Delta | TurnDone, None]: ...

    def interrupt(self) -> None:
        """The coming stop is the gateway's (it is shutting down), not the client's."""
        ...

    async def close(self) -> None:
        """Once the stream is over: settle it if `events()` never began (its client left, or
        the response's start failed, before the relay did). An iterated stream settles itself."""
        ...


class TurnStream:
    """Iterate `events()` once: the reply's `Delta`s, then one `TurnDone`.

    What the history keeps:
    - the model finished: the user message and the whole reply;
    - iteration stopped early (the client cancelled or went away) after at least
      one delta was yielded: the user message and the partial reply, `cancelled`
      (`incomplete` when the gateway stopped it, see `interrupt`);
    - the model server failed after at least one delta: the same, `incomplete`,
      and the `BackendError` is raised to the caller;
    - nothing was yielded, or `events()` was never iterated (`close`): nothing, so the
      client can simply retry; the model is stopped and charged for what it was sent.
    The turn lock is released in every case, and kept alive while deltas flow.
    """

    def __init__(
        self,
        *,
        store: ActiveSessionStore,
        turn: OpenTurn,
        first: StreamEvent,
        events: AsyncGenerator[StreamEvent, None],
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        lock_seconds: float,
        settled: Callable[[TurnOutcome | None], Awaitable[None]] | None = None,
        sent_tokens: int = 0,
        charge_sent: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._settled_hook = settled
        self._charge_sent = charge_sent  # for a turn that stored nothing: what the model was sent
        self._turn = turn
        self._first = first
        self._events = events
        self._clock = clock
        self._new_id = new_id
        self._lock_seconds = lock_seconds
        # What the model was sent, estimated in tokens (a cut-short turn is charged for it): the
        # count, not the messages, so an open stream does not keep its whole context alive.
        self._sent_tokens = sent_tokens
        self._lock_renewed = time.monotonic()
        self._settled = False
        self._begun = False  # events() was iterated: it settles the turn itself
        self._stopped_as = MessageStatus.CANCELLED
        self.outcome: TurnOutcome | None = None

    def interrupt(self) -> None:
        self._stopped_as = MessageStatus.INCOMPLETE

    async def events(self) -> AsyncGenerator[Delta | TurnDone, None]:
        self._begun = True
        pieces: list[str] = []
        event: StreamEvent | None = self._first
        try:
            while True:
                if event is None:
                    raise BackendError("The model server ended the stream without a final message.")
                if isinstance(event, StreamEnd):
                    outcome = await self._store_reply(
                        "".join(pieces), MessageStatus.COMPLETE, event.usage, event.finish_reason
                    )
                    yield TurnDone(outcome)
                    return
                pieces.append(event.content)
                yield event
                if time.monotonic() - self._lock_renewed > self._lock_seconds / 3:  # not a coroutine a delta
                    await self._keep_lock()
                event = await anext(self._events, None)
        except BackendError as exc:
            count_backend_error(exc)
            await self._settle_early(pieces, MessageStatus.INCOMPLETE)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # Stop the model first, then keep what the client already has.
            await self._events.aclose()
            await asyncio.shield(self._settle_early(pieces, self._stopped_as))
            raise
        except Exception:
            # Anything else (a bug, an error the model's adapter did not map): settled as a
            # model failure is, so the turn lock and the Idempotency-Key are not left held
            # and what the client already has is kept.
            await self._events.aclose()
            await asyncio.shield(self._settle_early(pieces, MessageStatus.INCOMPLETE))
            raise
        finally:
            await self._events.aclose()

    async def close(self) -> None:
        if self._begun:
            return
        self._begun = True
        # Shielded: the turn lock and the Idempotency-Key must not stay held because the task
        # that never relayed the stream is being cancelled as well.
        await asyncio.shield(self._abandon())

    async def _abandon(self) -> None:
        await self._events.aclose()  # stop the model first
        await self._settle_early([], self._stopped_as)

    async def _keep_lock(self) -> None:
        self._lock_renewed = time.monotonic()
        await self._store.extend_turn(self._turn.session.id, token=self._turn.token, lock_seconds=self._lock_seconds)

    async def _settle_early(self, pieces: list[str], status: MessageStatus) -> None:
        if self._settled:
            return
        try:
            if pieces:
                # Tokens are unknown without the final message: each delta is about one token,
                # and the input is what the model was sent, estimated. Charged like any turn, so
                # cancelling after one delta does not dodge the tokens-per-minute limit.
                usage = TokenUsage(self._sent_tokens, len(pieces))
                await self._store_reply("".join(pieces), status, usage, None)
            else:
                self._settled = True
                if self._charge_sent is not None:  # the model had the prompt
                    self._charge_sent(self._sent_tokens)
                await self._store.release_turn(self._turn.session.id, token=self._turn.token)
                await self._notify(None)
        except GatewayError:
            # The store is down: nothing more can be kept (the lock is released once it is back).
            logger.warning("could not settle a cut-short turn session_id=%s", self._turn.session.id)

    async def _notify(self, outcome: TurnOutcome | None) -> None:
        if self._settled_hook is not None:
            try:
                await self._settled_hook(outcome)
            except GatewayError:
                logger.warning("could not record a settled turn session_id=%s", self._turn.session.id)

    async def _store_reply(
        self, content: str, status: MessageStatus, usage: TokenUsage, finish_reason: FinishReason | None
    ) -> TurnOutcome:
        self._settled = True
        try:
            self.outcome = await self._turn.commit(
                self._store,
                reply=content,
                usage=usage,
                finish_reason=finish_reason,
                at=self._clock(),
                new_id=self._new_id,
                status=status,
                streamed=True,
            )
        except BaseException:
            # Not stored: the turn failed, whatever the client saw; the session is free again,
            # and so is the request's Idempotency-Key.
            await self._notify(None)
            raise
        await self._notify(self.outcome)
        return self.outcome


class ReplayStream:
    """A streamed turn answered before (same Idempotency-Key): its reply at once, then done."""

    def __init__(self, outcome: TurnOutcome) -> None:
        self.outcome: TurnOutcome | None = outcome

    async def events(self) -> AsyncGenerator[Delta | TurnDone, None]:
        assert self.outcome is not None
        yield Delta(self.outcome.message.content)
        yield TurnDone(self.outcome)

    def interrupt(self) -> None:
        pass  # stored already: nothing to mark

    async def close(self) -> None:
        pass  # nothing was claimed or asked


async def first_event(events: AsyncGenerator[StreamEvent, None]) -> StreamEvent:
    """The model stream's first event, the wait for it annotated as the backend's time. On any
    failure (a stream that ends without answering too) the error is counted and the stream
    closed before the failure propagates. An edge that watches its client stops the wait when
    it leaves (`core.departure`): cancelled, or `ClientGone` if it had left before the model
    was asked."""
    started = time.perf_counter()
    try:
        first = await until_departure(anext(events, None))
        annotate(backend_seconds=time.perf_counter() - started)
        if first is None:
            raise BackendError("The model server ended the stream without answering.")
    except BaseException as exc:
        count_backend_error(exc)
        await events.aclose()
        raise
    return first
