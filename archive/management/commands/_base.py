"""What the archive commands share: running the async services, and refusing a store they cannot reach."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from django.core.management.base import CommandError

from core.durations import parse_duration
from core.observability.tracing import setup_tracing
from sessions_app.public import get_session_store, session_store_in_process

T = TypeVar("T")
logger = logging.getLogger(__name__)


def run(work: Coroutine[Any, Any, T]) -> T:
    setup_tracing(default_service="llm-session-gateway-jobs")
    return asyncio.run(_closing(work))


async def _closing(work: Coroutine[Any, Any, T]) -> T:
    from archive.errors import ArchiveUnavailable
    from archive.wiring import get_archive_store, get_owner_gate

    try:
        try:
            await get_archive_store().start()
        except ArchiveUnavailable:
            # Not fatal: each archive operation starts the store again before use, and until the
            # archive is back those fail one by one (their sessions stay in Redis). The scheduler
            # must keep running through an outage, and a command must report it, not crash.
            logger.warning("the archive cannot be reached; archive operations fail until it is back")
        return await work
    finally:
        await get_session_store().close()
        await get_archive_store().close()
        await get_owner_gate().close_connections()


def require_shared_store() -> None:
    """Commands run in their own process: they cannot see sessions that live inside the gateway."""
    if session_store_in_process():
        raise CommandError(
            "Without REDIS_URL the active sessions live inside the gateway process, which archives them "
            "itself (SCHEDULER_EMBEDDED). Set REDIS_URL to run this command."
        )


def duration(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
