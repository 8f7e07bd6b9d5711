"""Readiness of the archive store: reachable, and the container in place. The scheduler's
progress for /metrics."""

import logging

from archive import metrics
from archive.scheduler import CACHE_ERRORS, last_successes, overdue_threshold
from archive.wiring import get_archive_store
from sessions_app.public import get_archiver_store, utc_now_ms_precision

logger = logging.getLogger(__name__)


async def check_archive() -> None:
    store = get_archive_store()
    await store.start()
    await store.list_by_owner("readiness-probe")


async def refresh_scheduler_gauges() -> None:
    """Computed here, not reported by the scheduler: a scheduler that stalled or never runs
    still shows, as sessions overdue and a last success that grows old."""
    overdue = await get_archiver_store().count_idle(before=utc_now_ms_precision() - overdue_threshold())
    metrics.SESSIONS_OVERDUE.set(overdue)
    try:
        successes = await last_successes()
    except CACHE_ERRORS as exc:  # Redis down: the gauge keeps its last value
        logger.warning("reading the scheduler's progress failed: %s", type(exc).__name__)
        return
    for kind, at in successes.items():
        metrics.SCHEDULER_LAST_SUCCESS.labels(pass_=kind).set(at)
