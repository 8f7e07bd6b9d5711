"""How a stored turn's ending becomes a response's status, and the ids a response gets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llm_backend.ports import Role
from openai_api.responses.records import is_response_id
from openai_api.responses.service import ending, new_message_ids, response_id_for
from sessions_app.domain import ChatMessage, ChatSession, MessageStatus, SessionStatus, TokenUsage, TurnOutcome
from sessions_app.public import FinishReason

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def outcome(finish_reason: FinishReason | None, status: MessageStatus = MessageStatus.COMPLETE) -> TurnOutcome:
    session = ChatSession("s", "o", SessionStatus.ACTIVE, "echo", "", {}, NOW, NOW)
    return TurnOutcome(
        session=session,
        user_message=ChatMessage("q", Role.USER, "hi", NOW),
        message=ChatMessage("a", Role.ASSISTANT, "Echo: hi", NOW, status),
        usage=TokenUsage(1, 2),
        finish_reason=finish_reason,
    )


@pytest.mark.parametrize(
    ("finish_reason", "status", "expected"),
    [
        (FinishReason.STOP, MessageStatus.COMPLETE, ("completed", None)),
        (FinishReason.LENGTH, MessageStatus.COMPLETE, ("incomplete", "max_output_tokens")),
        (FinishReason.CONTENT_FILTER, MessageStatus.COMPLETE, ("incomplete", "content_filter")),
        (None, MessageStatus.CANCELLED, ("cancelled", None)),  # the client closed the stream
        (None, MessageStatus.INCOMPLETE, ("failed", None)),  # the model server failed mid-stream
    ],
)
def test_a_stored_turns_ending_is_the_responses_status(
    finish_reason: FinishReason | None, status: MessageStatus, expected: tuple[str, str | None]
) -> None:
    assert ending(outcome(finish_reason, status)) == expected


def test_a_failure_after_a_whole_reply_is_still_failed() -> None:
    assert ending(outcome(FinishReason.STOP), failed=True) == ("failed", None)


def test_an_idempotency_key_gives_every_repeat_the_same_response_id_and_owners_differ() -> None:
    first = response_id_for("alice", "key-1")

    assert first == response_id_for("alice", "key-1") and is_response_id(first)
    assert first != response_id_for("bob", "key-1") and first != response_id_for("alice", "key-2")
    assert response_id_for("alice", None) != response_id_for("alice", None)
    question, answer = new_message_ids()
    assert question != answer and len(question) == 16
