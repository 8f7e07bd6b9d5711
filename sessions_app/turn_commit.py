"""A turn in a locked session, and its commit: the one place a turn's question and answer are stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.observability.tracing import child_span
from core.result import unwrap
from llm_backend.ports import FinishReason
from sessions_app.domain import (
    ChatMessage,
    ChatSession,
    KeyedWrite,
    MessageStatus,
    Role,
    TokenUsage,
    TurnOutcome,
)
from sessions_app.ports import ActiveSessionStore, CommitRider
from sessions_app.telemetry import record_completion, tracer


@dataclass(frozen=True, slots=True)
class OpenTurn:
    """A locked session and the turn about to run in it."""

    session: ChatSession
    owner: str
    token: str
    content: str
    received_at: datetime
    # The turn's Idempotency-Key record from what a repeat replays (`turn_record`), when it has a key.
    keyed: Callable[[dict[str, Any]], KeyedWrite] | None = None
    # An edge's writes stored in the turn's own append (`SideWrite`), when its store takes them.
    rider: CommitRider | None = None

    async def commit(
        self,
        store: ActiveSessionStore,
        *,
        reply: str,
        usage: TokenUsage,
        finish_reason: FinishReason | None,
        at: datetime,
        new_id: Callable[[], str],
        status: MessageStatus = MessageStatus.COMPLETE,
        streamed: bool = False,
    ) -> TurnOutcome:
        """Store the question and `reply` together, in one atomic append that frees the lock,
        with the turn's Idempotency-Key record when it ran to its end (`finish_reason`) and the
        rider's writes, whenever the turn is stored.

        Should the store fail, nothing is stored: the lock is released so the client can retry,
        and the failure is raised. `streamed`: the model's span has ended by now, so the reply's
        figures go on this one.
        """
        user_message = ChatMessage(new_id(), Role.USER, self.content, self.received_at)
        message = ChatMessage(new_id(), Role.ASSISTANT, reply, at, status)
        attributes = {"gateway.reply.status": status.value} if streamed else None
        keyed = None
        if self.keyed is not None and finish_reason is not None:
            keyed = self.keyed(turn_record(self.session.id, user_message, message, usage, finish_reason))
        side = None
        if self.rider is not None:
            side = self.rider(TurnOutcome(self.session, user_message, message, usage, finish_reason))
        with child_span(tracer, "append turn", attributes=attributes) as span:
            if streamed:
                record_completion(span, usage, finish_reason)
            try:
                appended = await store.append_turn(
                    self.session.id,
                    owner=self.owner,
                    token=self.token,
                    messages=(user_message, message),
                    usage=usage,
                    at=at,
                    keyed=keyed,
                    side=side,
                )
            except BaseException:
                await store.release_turn(self.session.id, token=self.token)
                raise
            if not streamed:  # a refused append marks this span; a streamed turn's caller reports it
                session = unwrap(appended)
        session = unwrap(appended)
        return TurnOutcome(
            session=session, user_message=user_message, message=message, usage=usage, finish_reason=finish_reason
        )


def turn_record(
    session_id: str, user_message: ChatMessage, message: ChatMessage, usage: TokenUsage, finish_reason: FinishReason
) -> dict[str, Any]:
    """What a turn's Idempotency-Key remembers for its repeats: ids and counts (the messages
    are read back from the session)."""
    return {
        "session_id": session_id,
        "user_message_id": user_message.id,
        "message_id": message.id,
        "usage": [usage.input_tokens, usage.output_tokens],
        "finish_reason": finish_reason.value,
    }
