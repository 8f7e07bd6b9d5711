"""The chat-session domain: frozen data objects that cross every boundary of this app."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from llm_backend.ports import ContextMessage, FinishReason, Role, TokenUsage

__all__ = [
    "ChatMessage",
    "ChatSession",
    "FinishReason",
    "KeptKeyedWrite",
    "KeyedWrite",
    "MessageStatus",
    "Role",
    "SessionPage",
    "SessionStatus",
    "TokenUsage",
    "Transcript",
    "TurnHistory",
    "TurnOutcome",
    "is_session_id",
]


_SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_session_id(value: str) -> bool:
    """Session ids are lowercase UUIDs; anything else names no session."""
    return _SESSION_ID.fullmatch(value) is not None


class SessionStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"  # takes no more messages; on its way to the archive
    ARCHIVED = "archived"  # in cold storage; `resume` brings it back


class MessageStatus(StrEnum):
    """Whether a reply is whole. A streamed reply cut short is kept, marked, once any
    of it reached the client."""

    COMPLETE = "complete"
    CANCELLED = "cancelled"  # the client cancelled or went away
    INCOMPLETE = "incomplete"  # the model server failed mid-stream


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: str
    role: Role
    content: str
    created_at: datetime
    status: MessageStatus = MessageStatus.COMPLETE
    # Its place in the order the session's messages were appended: given by the store, never
    # reused, unchanged when an earlier message is deleted (so a cursor on it holds). None until
    # stored; not part of equality (a message before and after storing is the same message).
    seq: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ChatSession:
    """A session's metadata; its messages travel separately in a `Transcript`."""

    id: str
    owner: str
    status: SessionStatus
    model: str
    system_prompt: str
    metadata: Mapping[str, Any]
    created_at: datetime
    last_activity_at: datetime
    message_count: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    # The `seq` the next appended message gets: the count of messages ever appended, deleted
    # ones included. A session stored before seqs existed had no deletion tracked: its count.
    next_seq: int = 0


@dataclass(frozen=True, slots=True)
class Transcript:
    session: ChatSession
    messages: tuple[ChatMessage, ...]

    def sequenced(self) -> Transcript:
        """The same transcript with a seq on every message (a message without one, never stored
        or stored before seqs existed, takes its position) and a `next_seq` past the last."""
        messages = tuple(m if m.seq is not None else replace(m, seq=i) for i, m in enumerate(self.messages))
        last = messages[-1].seq if messages else None
        if last is None or last < self.session.next_seq:
            return Transcript(self.session, messages)
        return Transcript(replace(self.session, next_seq=last + 1), messages)


@dataclass(frozen=True, slots=True)
class TurnHistory:
    """A session locked for a turn, with its newest messages as the model's context takes them:
    role and content only (a turn uses nothing else of them, and decoding a whole message each
    turn cost more than the model's request did), and the id of the newest for `follows`."""

    session: ChatSession
    messages: tuple[ContextMessage, ...]
    last_message_id: str | None
    # Instead of a lock: the record of the write the session holds for the turn's Idempotency-Key.
    answered: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyedWrite:
    """An Idempotency-Key's record, stored with the turn (or the messages) it answers, in the
    session's own keys: whatever became of the key's record in the idempotency store (on a
    Redis Cluster another master's, which a failover can lose), the session knows its write
    was stored. `record` is opaque to the store; it is kept for `ttl_seconds`."""

    key: str  # the key's id (a hash of the client's key)
    record: bytes
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class KeptKeyedWrite:
    """A `KeyedWrite` as its session keeps it: it answers a retry until `until`, and stays,
    lapsed, until newer ones push it out."""

    key: str
    record: bytes
    until: datetime


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: tuple[ChatSession, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    session: ChatSession
    user_message: ChatMessage
    message: ChatMessage
    usage: TokenUsage
    finish_reason: FinishReason | None  # None when the turn did not run to its end
