"""Readiness of the active session store, and its count of sessions and reachability for /metrics."""

from core.errors import GatewayError
from sessions_app import metrics
from sessions_app.wiring import get_session_store


async def check_active_store() -> None:
    await get_session_store().ping()


async def refresh_active_sessions() -> None:
    """Also says whether the store answered: an alert on Redis being down needs a series that
    does not depend on turns arriving (a quiet night has no failed turns to count)."""
    try:
        count = await get_session_store().count_active()
    except GatewayError:
        metrics.ACTIVE_STORE_UP.set(0)
        raise
    metrics.ACTIVE_STORE_UP.set(1)
    metrics.ACTIVE_SESSIONS.set(count)
