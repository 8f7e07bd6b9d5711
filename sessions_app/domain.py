"""The chat-session domain: frozen data objects that cross every boundary of this app."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from llm_backend.ports import FinishReason, Role, TokenUsage

__all__ = [
    "ChatMessage",
    "ChatSession",
    "FinishReason",
    "MessageStatus",
    "Role",
    "SessionPage",
    "SessionStatus",
    "TokenUsage",
    "Transcript",
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


@dataclass(frozen=True, slots=True)
class Transcript:
    session: ChatSession
    messages: tuple[ChatMessage, ...]


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
