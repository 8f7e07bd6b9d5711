"""The active store's two ports (the turn path's `ActiveSessionStore`, the archiver's
`ArchiverSessionStore`: one adapter implements both) and the `SessionArchive` port."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.errors import GatewayError
from core.result import Result
from sessions_app.domain import (
    ChatMessage,
    ChatSession,
    KeptKeyedWrite,
    KeyedWrite,
    SessionPage,
    SessionStatus,
    TokenUsage,
    Transcript,
    TurnHistory,
    TurnOutcome,
)
from sessions_app.errors import (
    MessageNotFound,
    SessionLimitReached,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
)

SessionLookupError = SessionNotFound | SessionNotActive | TurnInProgress


# How many deleted message ids (with their seqs, never content) a session remembers: enough for a
# client that pages and deletes as it goes to name the last item it saw in its next `after`.
DELETED_IDS_KEPT = 1000

# How many of its Idempotency-Keyed writes a session remembers (`KeyedWrite`, ids and counts):
# a retry comes soon after its request, before many other turns of the same session.
KEYED_WRITES_KEPT = 8


@dataclass(frozen=True, slots=True)
class SideWrite:
    """Another app's writes that must be stored exactly when a turn is (a `/v1/responses` turn's
    response record): run by the store in the turn's own append, after the turn is stored and
    only if it is, so the whole commit is one atomic step (and one round trip).

    A store whose `side_write_target` is a Redis runs `commands` (Redis commands, on `keys`:
    every key they touch); one whose target is its process calls `apply`. A rider fills the
    one its own store's target matched (`CommitRider`)."""

    keys: tuple[str, ...] = ()
    commands: tuple[Sequence[str | bytes | int | float], ...] = ()
    apply: Callable[[], None] | None = None


class CommitRider(Protocol):
    """What an edge hands the turn pipeline for writes of its own to ride the turn's commit."""

    def __call__(self, turn: TurnOutcome) -> SideWrite:
        """The writes for `turn`, as it is about to be stored (its session as the turn found it)."""
        ...


class ActiveSessionStore(Protocol):
    """Active sessions as the turn path and the owner's requests see them: metadata, ordered
    messages, an owner index, and a turn lock per session.

    Every method that names a session takes its `owner`; a session owned by
    someone else answers exactly as a missing one does (`SessionNotFound`).
    Implementations raise `core.errors.StoreUnavailable` when their backing
    service cannot be reached; other failures are returned as `Err`. An adapter
    implements `ArchiverSessionStore` too, over the same sessions.
    """

    # Where a `SideWrite` can ride this store's `append_turn`: a name of the one Redis (or the
    # process) its sessions are in, equal to another store's that writes to the same place;
    # None when it takes none (on a Redis Cluster a turn's keys and another app's are in
    # different slots, out of one script's reach).
    side_write_target: str | None

    async def create(self, session: ChatSession, *, max_sessions_per_owner: int) -> Result[None, SessionLimitReached]:
        """Store a new session unless its owner already holds `max_sessions_per_owner`."""
        ...

    async def get(self, session_id: str, *, owner: str) -> Result[ChatSession, SessionNotFound]:
        """The session's metadata, without its messages."""
        ...

    async def load(
        self, session_id: str, *, owner: str, offset: int = 0, limit: int | None = None, from_seq: int | None = None
    ) -> Result[Transcript, SessionNotFound]:
        """The session with its messages, oldest first, each with its `seq`: all of them, or at
        most `limit` starting at the `offset`-th, or (with `from_seq`) at the first whose seq is
        at least `from_seq`, where a deletion since cannot shift the start."""
        ...

    async def begin_turn(
        self,
        session_id: str,
        *,
        owner: str,
        token: str,
        lock_seconds: float,
        history_limit: int,
        key: str | None = None,
    ) -> Result[TurnHistory, SessionLookupError]:
        """Lock the session for one turn and return it with its newest `history_limit` messages
        (their roles and contents, oldest first, and the newest one's id).

        With `key` (an Idempotency-Key's id) that a write the session holds was stored with
        (one of its last `KEYED_WRITES_KEPT`, within its lifetime): no lock is taken, and the
        history's `answered` is that write's record (whatever the session's status).

        Fails with `TurnInProgress` while another turn holds the lock and with
        `SessionNotActive` unless the session is active. The lock expires by
        itself after `lock_seconds`, so a crashed turn cannot hold it forever.
        """
        ...

    async def append_turn(
        self,
        session_id: str,
        *,
        owner: str,
        token: str,
        messages: Sequence[ChatMessage],
        usage: TokenUsage,
        at: datetime,
        keyed: KeyedWrite | None = None,
        side: SideWrite | None = None,
    ) -> Result[ChatSession, SessionNotFound | TurnInProgress]:
        """Atomically append `messages`, add `usage`, mark activity at `at` and release the lock;
        with `keyed`, remember its record for `begin_turn`'s `key`, in the same atomic step; with
        `side` (only where `side_write_target` is not None), run it too, after the turn's writes,
        whenever the answer is `Ok` (a retry of an append that was stored runs it again: its
        writes must bear repeating).

        The store gives each message its `seq` from the session's `next_seq` (whatever seq the
        messages passed carry) and advances it.

        Appends nothing unless `token` still holds the turn lock: a session
        deleted meanwhile is `SessionNotFound`, a lock that expired and was
        taken by another turn is `TurnInProgress`.
        """
        ...

    async def keyed_write(self, session_id: str, *, owner: str, key: str) -> bytes | None:
        """The record of the write the owner's session holds for `key`, as `begin_turn` finds it,
        without locking anything; None when it holds none (or the session is not the owner's)."""
        ...

    async def keyed_writes(self, session_id: str, *, owner: str) -> tuple[KeptKeyedWrite, ...]:
        """Every keyed write the owner's session keeps (`append_turn`'s `keyed`), newest first,
        lapsed ones included until newer ones push them out: for the owner's export. Empty when
        the session is missing or not the owner's."""
        ...

    async def extend_turn(self, session_id: str, *, token: str, lock_seconds: float) -> bool:
        """Keep a long turn's lock for another `lock_seconds`; False if `token` no longer holds it."""
        ...

    async def release_turn(self, session_id: str, *, token: str) -> None:
        """Release the turn lock if `token` still holds it; appends nothing.

        Never fails for an unreachable store: it keeps trying in the background,
        so a session is not left locked for the lock's whole lifetime by a blip."""
        ...

    async def set_status(
        self, session_id: str, *, owner: str, status: SessionStatus, at: datetime
    ) -> Result[ChatSession, SessionNotFound | TurnInProgress]:
        """Change the status, refusing while a turn holds the lock."""
        ...

    async def set_metadata(
        self, session_id: str, *, owner: str, metadata: Mapping[str, Any], at: datetime
    ) -> Result[ChatSession, SessionNotFound]:
        """Replace the session's metadata (whatever its status, even during a turn: a turn
        never writes metadata) and mark activity at `at`."""
        ...

    async def delete_message(
        self, session_id: str, *, owner: str, message_id: str, at: datetime
    ) -> Result[ChatSession, SessionNotFound | MessageNotFound | TurnInProgress]:
        """Remove one message (the later ones move up by one position, each keeping its seq) and
        mark activity at `at`.

        Refused with `TurnInProgress` while a turn holds the lock (its commit appends after the
        history it read); `MessageNotFound` when the session holds no message with that id.
        The deleted id is remembered with its seq (ids only, the last `DELETED_IDS_KEPT`
        deletions, gone with the session's keys), for `deleted_message_seq`.
        """
        ...

    async def deleted_message_seq(self, session_id: str, *, owner: str, message_id: str) -> int | None:
        """The seq of a message recently deleted from the owner's session (one of its last
        `DELETED_IDS_KEPT` deletions while active), so a page after it starts where it stood;
        None for any other id, and for a session that is not the owner's."""
        ...

    async def list_by_owner(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        """The owner's sessions, newest first, `limit` at a time; `cursor` continues a page."""
        ...

    async def delete(self, session_id: str, *, owner: str) -> Result[None, SessionNotFound]:
        """Remove the session and every message of it; a turn in flight then stores nothing."""
        ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers (for readiness checks)."""
        ...

    async def count_active(self) -> int:
        """How many sessions the store holds (for the metrics)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class ArchiverSessionStore(Protocol):
    """The active store as the archiver and the sweeper see it: the activity index of idle
    sessions, a whole session taken under its turn lock whatever its owner, and a session put
    back. Owners are not checked here: these callers act for the operator, never for a client.

    The same adapter instance as the process's `ActiveSessionStore` (the lock is the turn lock,
    so a turn and an archiving exclude each other). Implementations raise
    `core.errors.StoreUnavailable` when their backing service cannot be reached.
    """

    async def list_idle(self, *, before: datetime, limit: int) -> list[str]:
        """Ids of sessions whose last activity is older than `before`, oldest first.

        Only sessions that exist: an activity-index entry whose session vanished (its TTL ran
        out, a delete stopped half-way) is removed when met, so fewer than `limit` ids means
        no more idle sessions. An entry whose session exists is never removed.
        """
        ...

    async def count_idle(self, *, before: datetime) -> int:
        """How many activity-index entries are older than `before` (for the metrics): cheap,
        and counting entries of vanished sessions too until `list_idle` meets them."""
        ...

    async def lock_for_archive(
        self, session_id: str, *, token: str, lock_seconds: float
    ) -> Result[Transcript, SessionNotFound | TurnInProgress]:
        """Take the session's turn lock whatever its status or owner and return all of it,
        so no turn can change it while it is copied to the archive."""
        ...

    async def delete_locked(self, session_id: str, *, token: str) -> bool:
        """Remove the session if `token` still holds its lock; False (nothing removed) otherwise."""
        ...

    async def restore(
        self, transcript: Transcript, *, max_sessions_per_owner: int
    ) -> Result[bool, SessionLimitReached]:
        """Put a whole session back (status and messages as given); Ok(False) if it is there already."""
        ...

    async def release_turn(self, session_id: str, *, token: str) -> None:
        """Release the lock `lock_for_archive` took, if `token` still holds it; removes nothing.

        Never fails for an unreachable store (as `ActiveSessionStore.release_turn`)."""
        ...


class SessionArchive(Protocol):
    """Cold storage for sessions that have left the active store (the archive app implements it)."""

    async def archive(self, session_id: str, *, actor: str) -> Result[ChatSession, GatewayError]:
        """Move the session from the active store into the archive; crash-safe and idempotent."""
        ...

    async def fetch(self, session_id: str, *, owner: str) -> Transcript | None:
        """The archived session with its messages, or None if the owner has no such archive."""
        ...

    async def list_archived(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        """The owner's archived sessions, newest first."""
        ...

    async def is_archived(self, session_id: str, *, owner: str) -> bool:
        """Whether the owner has this session in the archive (cheap: no download)."""
        ...

    async def restore(self, session_id: str, *, owner: str, actor: str) -> Result[ChatSession, GatewayError]:
        """Bring an archived session back into the active store, active, with its whole history."""
        ...

    async def erase(self, session_id: str, *, owner: str, actor: str) -> bool:
        """Delete the session's archived copy; False if there was none."""
        ...
