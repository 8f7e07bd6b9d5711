"""What other apps may use of the sessions app: everything they import from it comes from here.

The archive app stores and restores sessions (the domain, the storage encoding it shares with
the active stores), reads and counts the active store, records what it does, and presents
sessions in exports. The OpenAI-compatible API (openai_api) reads and edits sessions through
the session manager (lifecycle, selectors, edits) and runs turns through the turn pipeline, its
response records riding the turns' commits (`CommitRider`, `SideWrite`).
The import linter (`make lint`, contracts in pyproject.toml) refuses an import of any other
sessions_app module from another app, so a change inside this app cannot quietly break another:
what is listed here is the contract.
"""

from __future__ import annotations

from sessions_app.api.presenters import iso as present_time
from sessions_app.api.presenters import transcript as present_transcript
from sessions_app.api.turn_input import MAX_STOP_SEQUENCES, STOP_RULE, stop_sequences
from sessions_app.domain import (
    ChatMessage,
    ChatSession,
    FinishReason,
    MessageStatus,
    SessionPage,
    SessionStatus,
    Transcript,
    TurnOutcome,
)
from sessions_app.edits import NewMessage
from sessions_app.errors import (
    HistoryMovedOn,
    MessageNotFound,
    ModelMismatch,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
    UnknownModel,
)
from sessions_app.idempotency import IdempotentRequest
from sessions_app.idempotency_guard import described_keyed_write
from sessions_app.models import SessionRecord
from sessions_app.policy import owner_actor, utc_now_ms_precision
from sessions_app.ports import ActiveSessionStore, ArchiverSessionStore, CommitRider, SideWrite
from sessions_app.recording import DatabaseRecorder, SessionEvent, SessionRecorder, erase_records
from sessions_app.stores.encoding import (
    decode_cursor,
    encode_cursor,
    from_ms,
    index_member,
    member_session_id,
    message_fields,
    message_from_fields,
    to_ms,
)
from sessions_app.wiring import (
    get_archiver_store,
    get_idempotency_store,
    get_session_manager,
    get_session_store,
    known_models,
    session_store_in_process,
)

__all__ = [
    "MAX_STOP_SEQUENCES",
    "STOP_RULE",
    "ActiveSessionStore",
    "ArchiverSessionStore",
    "ChatMessage",
    "ChatSession",
    "CommitRider",
    "DatabaseRecorder",
    "FinishReason",
    "HistoryMovedOn",
    "IdempotentRequest",
    "MessageNotFound",
    "MessageStatus",
    "ModelMismatch",
    "NewMessage",
    "SessionEvent",
    "SessionNotActive",
    "SessionNotFound",
    "SessionPage",
    "SessionRecord",
    "SessionRecorder",
    "SessionStatus",
    "SideWrite",
    "Transcript",
    "TurnInProgress",
    "TurnOutcome",
    "UnknownModel",
    "decode_cursor",
    "described_keyed_write",
    "encode_cursor",
    "erase_records",
    "from_ms",
    "get_archiver_store",
    "get_idempotency_store",
    "get_session_manager",
    "get_session_store",
    "index_member",
    "known_models",
    "member_session_id",
    "message_fields",
    "message_from_fields",
    "owner_actor",
    "present_time",
    "present_transcript",
    "session_store_in_process",
    "stop_sequences",
    "to_ms",
    "utc_now_ms_precision",
]
