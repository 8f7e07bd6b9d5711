"""The Celery-free scheduler: a plain loop that archives idle sessions and purges expired
archives on intervals, with at most one replica acting at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Protocol

from django.conf import settings
from django.core.cache import cache
from django_redis.exceptions import ConnectionInterrupted  # type: ignore[import-untyped]
from redis.exceptions import LockError, RedisError

from archive import metrics
from archive.services import ArchiveService, PassReport
from core.redis_clients import connect

logger = logging.getLogger(__name__)


class LeaderLock(Protocol):
    """Who may act: one replica at a time holds it, and renews it each pass."""

    async def hold(self) -> bool:
        """Take or renew the lock; False while another replica holds it."""
        ...

    async def release(self) -> None: ...


class RedisLeaderLock:
    """redis-py's Lock, with a TTL longer than a pass, so a crashed holder frees it."""

    def __init__(self, url: str, *, name: str, ttl: float, cluster: bool = False) -> None:
        self._client = connect(url, cluster=cluster, max_connections=4, timeout=5, retries=3)
        self._lock = self._client.lock(name, timeout=ttl, blocking=False, thread_local=False)
        self._held = False

    async def hold(self) -> bool:
        try:
            if self._held:
                self._held = bool(await self._lock.reacquire())
            else:
                self._held = bool(await self._lock.acquire())
        except (LockError, RedisError) as exc:
            logger.warning("scheduler lock unavailable: %s", type(exc).__name__)
            self._held = False
        return self._held

    async def release(self) -> None:
        if self._held:
            with contextlib.suppress(LockError, RedisError):
                await self._lock.release()
            self._held = False
        await self._client.aclose()


class ProcessLock:
    """The in-process store has a single process: it always leads."""

    async def hold(self) -> bool:
        return True

    async def release(self) -> None:
        return None


def leader_lock(interval: float, budget: float = 0.0) -> LeaderLock:
    if settings.REDIS_URL:
        # Renewed before each pass: it must outlast the longest one (an archive pass ends at its budget).
        ttl = max(30.0, 3 * interval, budget + 2 * interval)
        name = f"{settings.REDIS_KEY_PREFIX}:{{scheduler}}:leader"
        return RedisLeaderLock(settings.REDIS_URL, name=name, ttl=ttl, cluster=settings.REDIS_CLUSTER)
    return ProcessLock()


# The scheduler's progress, for /metrics: in Django's cache, which is Redis whenever the scheduler
# runs as its own process, so the gateway exports what any scheduler replica did.
PASSES = ("archive", "purge")
CACHE_ERRORS = (ConnectionInterrupted, RedisError)  # what django-redis raises for a Redis it cannot reach


def _progress_key(kind: str) -> str:
    return f"scheduler:last-success:{kind}"


async def record_success(kind: str, at: float) -> None:
    metrics.SCHEDULER_LAST_SUCCESS.labels(pass_=kind).set(at)
    try:
        await cache.aset(_progress_key(kind), at, timeout=None)
    except CACHE_ERRORS as exc:  # the metric only: a pass must not fail for it
        logger.warning("scheduler: recording the %s pass's success failed: %s", kind, type(exc).__name__)


async def last_successes() -> dict[str, float]:
    """When each pass last succeeded (Unix time), in whichever process it ran."""
    found = await cache.aget_many([_progress_key(kind) for kind in PASSES])
    return {kind: float(found[_progress_key(kind)]) for kind in PASSES if _progress_key(kind) in found}


class Scheduler:
    def __init__(
        self,
        service: ArchiveService,
        lock: LeaderLock,
        *,
        idle_for: timedelta,
        retention: timedelta,
        archive_every: float,
        purge_every: float,
        archive_budget: float | None = None,
    ) -> None:
        self._service = service
        self._lock = lock
        self._idle_for = idle_for
        self._retention = retention
        self._archive_every = archive_every
        self._purge_every = purge_every
        self._archive_budget = archive_budget
        self.passes = 0

    async def run_once(self, stop: asyncio.Event | None = None) -> bool:
        """One archive pass and one purge pass, if this replica leads; False if another does.
        The lock is released on the way out, so the next run (any replica) need not wait for it."""
        stop = stop or asyncio.Event()
        try:
            if not await self._lock.hold():
                return False
            await self._archive_pass(stop)
            if not stop.is_set():
                await self._purge_pass()
            return True
        finally:
            await self._lock.release()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: archive every `archive_every` seconds, purge every `purge_every`.
        An archive pass that ran out of its budget is followed by the next one at once."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        try:
            while not stop.is_set():
                unfinished = False
                if await self._lock.hold():
                    unfinished = await self._archive_pass(stop)
                    if loop.time() >= next_purge and not stop.is_set() and await self._lock.hold():
                        await self._purge_pass()
                        next_purge = loop.time() + self._purge_every
                else:
                    logger.info("scheduler: another replica holds the lock; waiting")
                self.passes += 1
                if not unfinished:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self._archive_every)
        finally:
            await self._lock.release()
            logger.info("scheduler stopped")

    async def _archive_pass(self, stop: asyncio.Event) -> bool:
        """True if it ended with idle sessions left (its budget ran out)."""
        work = self._service.archive_idle(idle_for=self._idle_for, budget=self._archive_budget, stop=stop)
        report = await self._logged("archive", work)
        return report is not None and report.unfinished and not stop.is_set()

    async def _purge_pass(self) -> None:
        await self._logged("purge", self._service.purge_expired(older_than=self._retention))

    async def _logged(self, kind: str, work: Awaitable[PassReport]) -> PassReport | None:
        try:
            report = await work
        except Exception:
            logger.exception("scheduler: %s pass failed", kind)  # retried next time
            return None
        if not report.failed:
            await record_success(kind, time.time())
        logger.info(
            "scheduler: %s pass examined=%d done=%d skipped=%d failed=%d%s",
            kind, report.examined, report.done, report.skipped, report.failed,
            " (budget spent; resuming)" if report.unfinished else "",
        )  # fmt: skip
        return report


def scheduler_from_settings(service: ArchiveService) -> Scheduler:
    interval = settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS
    budget = settings.SCHEDULER_ARCHIVE_BUDGET_SECONDS
    return Scheduler(
        service,
        leader_lock(interval, budget),
        idle_for=timedelta(seconds=settings.ARCHIVE_IDLE_SECONDS),
        retention=timedelta(days=settings.ARCHIVE_RETENTION_DAYS),
        archive_every=interval,
        purge_every=settings.SCHEDULER_PURGE_INTERVAL_SECONDS,
        archive_budget=budget,
    )


def overdue_threshold() -> timedelta:
    """A session idle this long should have been archived by now: the idle threshold plus two
    archive intervals, so a healthy scheduler keeps the overdue count at (about) zero."""
    return timedelta(seconds=settings.ARCHIVE_IDLE_SECONDS + 2 * settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS)
