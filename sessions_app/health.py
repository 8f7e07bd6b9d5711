"""Readiness of the active session store."""

from sessions_app.wiring import get_session_store


async def check_active_store() -> None:
    await get_session_store().ping()


async def count_active_sessions() -> int:
    return await get_session_store().count_active()
