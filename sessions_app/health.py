"""Readiness of the active session store, and its count of sessions for /metrics."""

from sessions_app import metrics
from sessions_app.wiring import get_session_store


async def check_active_store() -> None:
    await get_session_store().ping()


async def refresh_active_sessions() -> None:
    metrics.ACTIVE_SESSIONS.set(await get_session_store().count_active())
