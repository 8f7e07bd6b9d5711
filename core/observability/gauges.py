"""Gauges that are read from elsewhere when scraped."""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.utils.module_loading import import_string

from core.errors import GatewayError
from core.observability import metrics


async def refresh_gauges() -> None:
    """The active-session count comes from the store, the scheduler's progress from where it
    keeps it (settings names how to count)."""
    count = import_string(settings.ACTIVE_SESSIONS_COUNTER)
    with contextlib.suppress(GatewayError):
        metrics.ACTIVE_SESSIONS.set(await count())
    with contextlib.suppress(GatewayError):
        await import_string(settings.SCHEDULER_GAUGES)()
