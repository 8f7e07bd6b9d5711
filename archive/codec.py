"""The archived form of a session: a versioned JSON document, before compression and encryption."""

from __future__ import annotations

from typing import Any

import orjson

from llm_backend.ports import TokenUsage
from sessions_app.public import (
    ChatSession,
    SessionStatus,
    Transcript,
    from_ms,
    message_fields,
    message_from_fields,
    to_ms,
)

FORMAT = 1


def encode(transcript: Transcript) -> bytes:
    session = transcript.session
    return orjson.dumps(
        {
            "format": FORMAT,
            "session": {
                "id": session.id,
                "owner": session.owner,
                "model": session.model,
                "system_prompt": session.system_prompt,
                "metadata": dict(session.metadata),
                "created_at": to_ms(session.created_at),
                "last_activity_at": to_ms(session.last_activity_at),
                "message_count": session.message_count,
                "usage": [session.usage.input_tokens, session.usage.output_tokens],
                "next_seq": session.next_seq,
            },
            "messages": [message_fields(m) for m in transcript.messages],
        }
    )


def decode(data: bytes, *, status: SessionStatus = SessionStatus.ARCHIVED) -> Transcript:
    document: dict[str, Any] = orjson.loads(data)
    if document.get("format") != FORMAT:
        raise ValueError(f"unknown archive format {document.get('format')!r}")
    s = document["session"]
    session = ChatSession(
        id=s["id"],
        owner=s["owner"],
        status=status,
        model=s["model"],
        system_prompt=s["system_prompt"],
        metadata=s["metadata"],
        created_at=from_ms(s["created_at"]),
        last_activity_at=from_ms(s["last_activity_at"]),
        message_count=s["message_count"],
        usage=TokenUsage(*s["usage"]),
        next_seq=s.get("next_seq", 0),  # an archive written before seqs: each message's position is its seq
    )
    return Transcript(session, tuple(message_from_fields(m) for m in document["messages"])).sequenced()
