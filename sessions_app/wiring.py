"""The process's `SessionManager`, its store and policy chosen once from settings."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import cast

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from core.adapters import build_adapter
from limits.wiring import get_limiter
from llm_backend.wiring import get_chat_backend
from sessions_app.idempotency import IdempotencyStore
from sessions_app.policy import SessionPolicy
from sessions_app.ports import ActiveSessionStore, ArchiverSessionStore, SessionArchive
from sessions_app.recording import DatabaseRecorder
from sessions_app.services import SessionManager
from sessions_app.stores.memory import InMemorySessionStore


def known_models() -> frozenset[str]:
    """`ALLOWED_MODELS`, or when it is empty the models `BACKEND_ROUTES` names; with the default
    model always. The model servers are not asked: what a client may choose stays the operator's
    decision, and one known set serves the schema, the checks and every metric label."""
    routed = {model for model in getattr(settings, "BACKEND_ROUTES", {}) if model != "*"}
    return frozenset(settings.ALLOWED_MODELS or routed) | {settings.DEFAULT_MODEL}


def policy_from_settings() -> SessionPolicy:
    limits = settings.SESSION_LIMITS
    return SessionPolicy(
        default_model=settings.DEFAULT_MODEL,
        known_models=known_models(),
        max_content_chars=limits["MAX_CONTENT_CHARS"],
        max_system_prompt_chars=limits["MAX_SYSTEM_PROMPT_CHARS"],
        max_metadata_bytes=limits["MAX_METADATA_BYTES"],
        max_messages_per_session=limits["MAX_MESSAGES_PER_SESSION"],
        max_sessions_per_owner=limits["MAX_SESSIONS_PER_OWNER"],
        max_output_tokens=limits["MAX_OUTPUT_TOKENS"],
        context_max_chars=limits["CONTEXT_MAX_CHARS"],
        context_max_messages=limits["CONTEXT_MAX_MESSAGES"],
        turn_lock_seconds=limits["TURN_LOCK_SECONDS"],
    )


@functools.cache
def get_session_store() -> ActiveSessionStore:
    store: ActiveSessionStore = build_adapter(settings.ACTIVE_SESSION_STORE)
    return store


def get_archiver_store() -> ArchiverSessionStore:
    """The same adapter as `get_session_store`, through the archiver's port (one set of
    sessions, one turn lock: the adapter classes implement both ports)."""
    return cast(ArchiverSessionStore, get_session_store())


def session_store_in_process() -> bool:
    """Whether the active sessions live inside this process (no REDIS_URL): a separate process,
    such as a management command, then cannot see the gateway's sessions."""
    return isinstance(get_session_store(), InMemorySessionStore)


@functools.cache
def get_session_manager() -> SessionManager:
    # The archive app implements SessionArchive and builds on this app: named by a
    # dotted path in settings, so this app never imports it.
    archive: SessionArchive = import_string(settings.SESSION_ARCHIVE)()
    return SessionManager(
        store=get_session_store(),
        backend=get_chat_backend(),
        policy=policy_from_settings(),
        recorder=DatabaseRecorder(),
        archive=archive,
        idempotency=get_idempotency_store(),
        limiter=get_limiter(),
        idempotency_ttl=settings.IDEMPOTENCY_TTL_SECONDS,
        forget_session=[_forget_session(path) for path in settings.OWNER_SIDE_STORES.values()],
    )


def _forget_session(getter_path: str) -> Callable[[str, str], Awaitable[None]]:
    """A side store's `forget_session`, the store looked up per call (it follows its own settings)."""
    getter = import_string(getter_path)

    async def forget(owner: str, session_id: str) -> None:
        await getter().forget_session(owner, session_id)

    return forget


@functools.cache
def get_idempotency_store() -> IdempotencyStore:
    store: IdempotencyStore = build_adapter(settings.IDEMPOTENCY_STORE)
    return store


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in {"ACTIVE_SESSION_STORE", "SESSION_ARCHIVE"}:
        get_session_store.cache_clear()
    if setting == "IDEMPOTENCY_STORE":
        get_idempotency_store.cache_clear()
    if setting.startswith("ARCHIVE_") or setting in {
        "ACTIVE_SESSION_STORE",
        "CHAT_BACKEND",
        "SESSION_LIMITS",
        "DEFAULT_MODEL",
        "ALLOWED_MODELS",
        "BACKEND_ROUTES",
        "SESSION_ARCHIVE",
        "IDEMPOTENCY_STORE",
        "OWNER_LIMITER",
        "OWNER_SIDE_STORES",
    }:
        get_session_manager.cache_clear()  # the sessions themselves stay in the store
