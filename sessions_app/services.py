"""`SessionManager`: the sessions app's services, built together on one set of ports.

The work is split by concern, each in its own module: `lifecycle` (create, end, resume,
delete), `turns` (running a turn, whole or streamed) and `selectors` (reads). The views,
the consumers and the turn pipeline call those services; the manager only builds them
and passes through the calls that the tests and the archive's tests make on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from limits.memory import MemoryLimiter
from limits.ports import OwnerLimiter
from llm_backend.ports import ChatBackend
from sessions_app.edits import SessionEdits
from sessions_app.idempotency import IdempotencyStore, MemoryIdempotencyStore
from sessions_app.idempotency_guard import IdempotencyGuard
from sessions_app.lifecycle import SessionLifecycle
from sessions_app.policy import SessionPolicy, owner_actor, utc_now_ms_precision
from sessions_app.ports import ActiveSessionStore, SessionArchive
from sessions_app.recording import SessionRecorder
from sessions_app.selectors import SessionSelectors
from sessions_app.stateless import StatelessTurns
from sessions_app.turns import TurnService

__all__ = ["SessionManager", "SessionPolicy", "owner_actor", "utc_now_ms_precision"]


class SessionManager:
    """Creates sessions, runs turns and retires sessions, on any store and backend."""

    def __init__(
        self,
        *,
        store: ActiveSessionStore,
        backend: ChatBackend,
        policy: SessionPolicy,
        recorder: SessionRecorder,
        archive: SessionArchive,
        idempotency: IdempotencyStore | None = None,
        limiter: OwnerLimiter | None = None,
        idempotency_ttl: int = 86_400,
        clock: Callable[[], datetime] = utc_now_ms_precision,
        forget_session: Sequence[Callable[[str, str], Awaitable[None]]] = (),
    ) -> None:
        self._store = store
        self._backend = backend
        self.policy = policy
        guard = IdempotencyGuard(
            idempotency or MemoryIdempotencyStore(),
            pending_seconds=int(policy.turn_lock_seconds),
            ttl=idempotency_ttl,
        )
        self.selectors = SessionSelectors(store=store, archive=archive)
        self.lifecycle = SessionLifecycle(
            store=store,
            archive=archive,
            recorder=recorder,
            policy=policy,
            guard=guard,
            selectors=self.selectors,
            clock=clock,
            forget_session=forget_session,
        )
        self.edits = SessionEdits(
            store=store,
            recorder=recorder,
            policy=policy,
            lifecycle=self.lifecycle,
            selectors=self.selectors,
            guard=guard,
            clock=clock,
        )
        limiter = limiter or MemoryLimiter(requests_per_minute=0, tokens_per_minute=0, streams_per_owner=0)
        self.stateless = StatelessTurns(backend=backend, policy=policy, limiter=limiter, guard=guard)
        self.turns = TurnService(
            store=store,
            backend=backend,
            archive=archive,
            policy=policy,
            guard=guard,
            limiter=limiter,
            selectors=self.selectors,
            clock=clock,
        )
        # The services' calls, under the names they have always had here.
        self.session_create = self.lifecycle.session_create
        self.session_end = self.lifecycle.session_end
        self.session_resume = self.lifecycle.session_resume
        self.session_delete = self.lifecycle.session_delete
        self.turn_send = self.turns.turn_send
        self.turn_stream = self.turns.turn_stream
        self.session_exists = self.selectors.session_exists
        self.session_get = self.selectors.session_get
        self.session_list = self.selectors.session_list

    async def close(self) -> None:
        await self._store.close()
        await self._backend.close()
