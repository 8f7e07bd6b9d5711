"""Compact encodings shared by the stores: messages, timestamps, owner-index members and cursors."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from sessions_app.domain import ChatMessage, MessageStatus, Role
from sessions_app.errors import InvalidCursor

# One letter per role keeps a stored message close to the size of its content.
_ROLE_CODE = {Role.USER: "u", Role.ASSISTANT: "a", Role.SYSTEM: "s"}
_CODE_ROLE = {v: k for k, v in _ROLE_CODE.items()}
# A session id is a lowercase UUID; a cursor naming anything else is forged (matched whole: `$`
# would let a trailing newline through to the SQL filter).
_MEMBER = re.compile(r"\d{13}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(ms: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def message_fields(message: ChatMessage) -> list[object]:
    """A message as a compact JSON array: [id, role letter, ms, content(, status)]."""
    fields: list[object] = [message.id, _ROLE_CODE[message.role], to_ms(message.created_at), message.content]
    if message.status != MessageStatus.COMPLETE:
        fields.append(message.status.value)  # only cut-short replies pay for a status
    return fields


def message_from_fields(fields: list[Any]) -> ChatMessage:
    message_id, role, ms, content, *rest = fields
    return ChatMessage(
        id=message_id,
        role=_CODE_ROLE[role],
        content=content,
        created_at=from_ms(ms),
        status=MessageStatus(rest[0]) if rest else MessageStatus.COMPLETE,
    )


def encode_message(message: ChatMessage) -> bytes:
    return orjson.dumps(message_fields(message))


def decode_message(raw: bytes | str) -> ChatMessage:
    return message_from_fields(orjson.loads(raw))


def index_member(session_id: str, created_at: datetime) -> str:
    """Owner-index member: sorts by creation time, ties broken by id."""
    return f"{to_ms(created_at):013d}:{session_id}"


def member_session_id(member: str) -> str:
    return member.partition(":")[2]


def encode_cursor(member: str) -> str:
    return base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The owner-index member a cursor points after; a tampered cursor is a 400 `invalid_cursor`."""
    try:
        member = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor() from exc
    if not _MEMBER.fullmatch(member):
        raise InvalidCursor()
    return member


_MESSAGE_POSITION = re.compile(r"m:(\d{1,9})")


def encode_message_cursor(offset: int) -> str:
    """A cursor to a session's messages from the `offset`-th on."""
    return encode_cursor(f"m:{offset}")


def decode_message_cursor(cursor: str) -> int:
    try:
        position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor() from exc
    matched = _MESSAGE_POSITION.fullmatch(position)
    if matched is None:
        raise InvalidCursor()
    return int(matched[1])
