"""Test builders for the sessions app: a SessionManager on the in-memory fakes."""

from __future__ import annotations

from typing import Any

from llm_backend.fake import FakeChatBackend
from sessions_app.fake_archive import InMemorySessionArchive
from sessions_app.recording import MemoryRecorder
from sessions_app.services import SessionManager, SessionPolicy
from sessions_app.stores.memory import InMemorySessionStore


def fake_manager(
    backend: FakeChatBackend,
    store: InMemorySessionStore | None = None,
    policy: SessionPolicy | None = None,
    **ports: Any,
) -> SessionManager:
    """A manager on `store` (a new in-memory one by default) with fakes for the other ports;
    `ports` (limiter, idempotency, ...) replace the manager's defaults."""
    store = store or InMemorySessionStore()
    return SessionManager(
        store=store,
        backend=backend,
        recorder=MemoryRecorder(),
        archive=InMemorySessionArchive(store),
        policy=policy or SessionPolicy(),
        **ports,
    )
