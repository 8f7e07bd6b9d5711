"""Builders for test data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from llm_backend.ports import Role
from sessions_app.domain import ChatMessage, ChatSession, SessionStatus

BASE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_session(*, owner: str = "o_alice", minutes: int = 0, **overrides: Any) -> ChatSession:
    at = BASE_TIME + timedelta(minutes=minutes)
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "owner": owner,
        "status": SessionStatus.ACTIVE,
        "model": "echo",
        "system_prompt": "Be brief.",
        "metadata": {"app": "tests"},
        "created_at": at,
        "last_activity_at": at,
    }
    values.update(overrides)
    return ChatSession(**values)


def make_message(content: str, *, role: Role = Role.USER, seconds: int = 0) -> ChatMessage:
    return ChatMessage(
        id=uuid.uuid4().hex[:16], role=role, content=content, created_at=BASE_TIME + timedelta(seconds=seconds)
    )


def make_turn(n: int) -> tuple[ChatMessage, ChatMessage]:
    return (
        make_message(f"question {n}", role=Role.USER, seconds=2 * n),
        make_message(f"answer {n}", role=Role.ASSISTANT, seconds=2 * n + 1),
    )
