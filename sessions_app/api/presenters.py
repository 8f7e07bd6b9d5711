"""The JSON shapes of sessions and messages, shared by the DRF views and the turn consumer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sessions_app.domain import ChatMessage, ChatSession, SessionPage, TokenUsage, Transcript, TurnOutcome
from sessions_app.stores.encoding import encode_message_cursor


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def usage(value: TokenUsage) -> dict[str, int]:
    return {"input_tokens": value.input_tokens, "output_tokens": value.output_tokens}


def message(value: ChatMessage) -> dict[str, Any]:
    return {
        "id": value.id,
        "role": value.role.value,
        "content": value.content,
        "created_at": iso(value.created_at),
        "status": value.status.value,
    }


def session(value: ChatSession) -> dict[str, Any]:
    return {
        "id": value.id,
        "status": value.status.value,
        "model": value.model,
        "system_prompt": value.system_prompt,
        "created_at": iso(value.created_at),
        "last_activity_at": iso(value.last_activity_at),
        "message_count": value.message_count,
        "usage": usage(value.usage),
        "metadata": dict(value.metadata),
    }


def transcript(value: Transcript) -> dict[str, Any]:
    return {**session(value.session), "messages": [message(m) for m in value.messages]}


def transcript_page(value: Transcript, limit: int) -> dict[str, Any]:
    """A page of `limit` messages from `value`, read with one more than the page (which says
    whether a next page exists). The cursor is the next message's seq, not a position: a message
    deleted between two pages shifts no later one."""
    shown = Transcript(value.session, value.messages[:limit])
    more = len(value.messages) > limit
    next_cursor = encode_message_cursor(cast(int, shown.messages[-1].seq) + 1) if more else None
    return {**transcript(shown), "messages_next": next_cursor}


def page(value: SessionPage) -> dict[str, Any]:
    return {"results": [session(s) for s in value.sessions], "next": value.next_cursor}


def turn(value: TurnOutcome) -> dict[str, Any]:
    return {
        "user_message": message(value.user_message),
        "message": message(value.message),
        "usage": usage(value.usage),
        "finish_reason": value.finish_reason.value if value.finish_reason else None,
    }
