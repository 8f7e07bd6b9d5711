"""Compact encodings shared by the stores: messages, timestamps, owner-index members and cursors."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from llm_backend.ports import ContextMessage
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
    """A message as a compact JSON array: [id, role letter, ms, content(, status)(, seq)].

    The seq comes last, an integer where every other trailing field is a string: so a message
    stored before seqs existed ([id, role, ms, content(, status)]) reads as it is, and the
    Redis scripts give a stored message its seq by writing `,seq` before the closing bracket."""
    fields: list[object] = [message.id, _ROLE_CODE[message.role], to_ms(message.created_at), message.content]
    if message.status != MessageStatus.COMPLETE:
        fields.append(message.status.value)  # only cut-short replies pay for a status
    if message.seq is not None:
        fields.append(message.seq)
    return fields


def message_from_fields(fields: list[Any], position: int | None = None) -> ChatMessage:
    """The message `fields` hold; one stored before seqs existed takes its `position` in the
    session as its seq (no deletion shifted it: the first deletion since gives each a seq)."""
    message_id, role, ms, content, *rest = fields
    seq = rest.pop() if rest and isinstance(rest[-1], int) else position
    return ChatMessage(
        id=message_id,
        role=_CODE_ROLE[role],
        content=content,
        created_at=from_ms(ms),
        status=MessageStatus(rest[0]) if rest else MessageStatus.COMPLETE,
        seq=seq,
    )


def encode_message(message: ChatMessage) -> bytes:
    return orjson.dumps(message_fields(message))


def decode_message(raw: bytes | str, position: int | None = None) -> ChatMessage:
    return message_from_fields(orjson.loads(raw), position)


def decode_messages(raws: Sequence[bytes | str], first_position: int) -> tuple[ChatMessage, ...]:
    """Stored messages read from the `first_position`-th on, oldest first."""
    return tuple(decode_message(raw, first_position + i) for i, raw in enumerate(raws))


def decode_context(raws: Sequence[bytes | str]) -> tuple[tuple[ContextMessage, ...], str | None]:
    """Stored messages, oldest first, as a model's context takes them (role and content), and the
    newest one's id: what a turn needs of its history, without the timestamp, status and seq of
    each message it would not use."""
    fields = [orjson.loads(raw) for raw in raws]
    return tuple([ContextMessage(_CODE_ROLE[f[1]], f[3]) for f in fields]), fields[-1][0] if fields else None


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


_MESSAGE_SEQ = re.compile(r"m:(\d{1,9})")


def encode_message_cursor(seq: int) -> str:
    """A cursor to a session's messages from the one with `seq` on (the seq, not a position: a
    message deleted before it moves nothing, so a page after a deletion neither skips nor repeats).
    A cursor issued before seqs existed held a position, the same number while nothing was deleted."""
    return encode_cursor(f"m:{seq}")


def decode_message_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor() from exc
    matched = _MESSAGE_SEQ.fullmatch(text)
    if matched is None:
        raise InvalidCursor()
    return int(matched[1])
