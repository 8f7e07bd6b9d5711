"""System checks: the settings that must agree for no session to be lost."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


@register()
def archive_before_expiry(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Redis keys expire as a safety net only: the archiver must always get there first."""
    idle, ttl = settings.ARCHIVE_IDLE_SECONDS, settings.SESSION_TTL_SECONDS
    interval = settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS
    if ttl <= idle + 2 * interval:
        return [
            Error(
                f"SESSION_TTL_SECONDS ({ttl}) must exceed ARCHIVE_IDLE_SECONDS ({idle}) plus two scheduler "
                f"intervals ({2 * interval:.0f}), or idle sessions could expire before they are archived.",
                id="archive.E001",
            )
        ]
    return []
