"""A response record (what `POST /v1/responses` stored: ids, counts and times) and its store's port."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sessions_app.public import SideWrite

_RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(16)


def is_response_id(value: str) -> bool:
    """Response ids are `resp_` and 32 hex digits; anything else names no response (and never
    reaches a store key)."""
    return _RESPONSE_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One stored response. The messages themselves live in the session (the record names them
    by id); what the record adds is what OpenAI's response object echoes back."""

    id: str
    owner: str
    session_id: str
    model: str
    input_message_id: str
    output_message_id: str
    status: str  # completed, incomplete, failed
    created_at: float  # seconds since the epoch
    input_tokens: int = 0
    output_tokens: int = 0
    incomplete_reason: str | None = None  # max_output_tokens when the model stopped at the limit
    instructions: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    previous_response_id: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "owner"}

    @classmethod
    def from_json(cls, owner: str, data: Mapping[str, Any]) -> ResponseRecord:
        known = {name: data[name] for name in cls.__slots__ if name in data and name != "owner"}
        return cls(owner=owner, **known)


class ResponseStore(Protocol):
    """Response records by owner: user data, so reached by the owner's export and erasure, gone
    with their session, and kept no longer than a session's keys are.

    Every method that names a response takes its `owner`; another owner's response answers as
    a missing one does. Implementations raise `core.errors.StoreUnavailable` when their backing
    service cannot be reached.
    """

    # Where `side_write`s go: a record rides a turn's append when this equals the session
    # store's `side_write_target` (None: never, `save` it after the turn).
    side_write_target: str | None

    async def save(self, record: ResponseRecord, *, ttl: int) -> None:
        """Keep `record` for `ttl` seconds (the session keys' safety-net TTL)."""
        ...

    def side_write(self, record: ResponseRecord, *, ttl: int) -> SideWrite:
        """`save`'s writes, for the session store to run in the append of `record`'s turn."""
        ...

    async def get(self, response_id: str, *, owner: str) -> ResponseRecord | None:
        """The owner's record, or None."""
        ...

    async def delete(self, response_id: str, *, owner: str) -> bool:
        """Remove the owner's record; False if there was none."""
        ...

    async def forget_session(self, owner: str, session_id: str) -> None:
        """Remove every record of the session (it was deleted)."""
        ...

    async def forget(self, owner: str) -> None:
        """Remove every record of the owner (erasure)."""
        ...

    async def describe(self, owner: str) -> list[dict[str, Any]]:
        """What is kept about the owner, for their export: each record's ids, status, token
        counts, time and lifetime; never instructions or metadata values (content)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def described(record: ResponseRecord, expires_in: float) -> dict[str, Any]:
    return {
        "response_id": record.id,
        "session_id": record.session_id,
        "input_message_id": record.input_message_id,
        "output_message_id": record.output_message_id,
        "status": record.status,
        "created_at": record.created_at,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "expires_in_seconds": max(0, round(expires_in)),
    }
