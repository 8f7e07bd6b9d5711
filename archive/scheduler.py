"""The Celery-free scheduler: a plain loop that archives idle sessions and purges expired
archives on intervals, with at most one replica acting at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Protocol

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from archive.services import ArchiveService, PassReport
from core.observability import metrics
from core.redis_clients import retry_policy

logger = logging.getLogger(__name__)


class LeaderLock(Protocol):
    """Who may act: one replica at a time holds it, and renews it each pass."""

    async def hold(self) -> bool:
        """Take or renew the lock; False while another replica holds it."""
        ...

    async def release(self) -> None: ...


class RedisLeaderLock:
    """redis-py's Lock, with a TTL longer than a pass, so a crashed holder frees it."""

    def __init__(self, url: str, *, name: str, ttl: float) -> None:
        self._client = Redis.from_url(url, retry=retry_policy(3), socket_timeout=5, socket_connect_timeout=5)
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


def leader_lock(interval: float) -> LeaderLock:
    if settings.REDIS_URL:
        return RedisLeaderLock(
            settings.REDIS_URL, name=f"{settings.REDIS_KEY_PREFIX}:{{scheduler}}:leader", ttl=max(30.0, 3 * interval)
        )
    return ProcessLock()


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
    ) -> None:
        self._service = service
        self._lock = lock
        self._idle_for = idle_for
        self._retention = retention
        self._archive_every = archive_every
        self._purge_every = purge_every
        self.passes = 0

    async def run_once(self) -> bool:
        """One archive pass and one purge pass, if this replica leads; False if another does."""
        if not await self._lock.hold():
            return False
        await self._archive_pass()
        await self._purge_pass()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: archive every `archive_every` seconds, purge every `purge_every`."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        try:
            while not stop.is_set():
                if await self._lock.hold():
                    await self._archive_pass()
                    if loop.time() >= next_purge:
                        await self._purge_pass()
                        next_purge = loop.time() + self._purge_every
                else:
                    logger.info("scheduler: another replica holds the lock; waiting")
                self.passes += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._archive_every)
        finally:
            await self._lock.release()
            logger.info("scheduler stopped")

    async def _archive_pass(self) -> None:
        await self._logged("archive", self._service.archive_idle(idle_for=self._idle_for))

    async def _purge_pass(self) -> None:
        await self._logged("purge", self._service.purge_expired(older_than=self._retention))

    async def _logged(self, kind: str, work: Awaitable[PassReport]) -> None:
        try:
            report = await work
        except Exception:
            logger.exception("scheduler: %s pass failed", kind)  # retried next time
            return
        if not report.failed:
            metrics.SCHEDULER_LAST_SUCCESS.labels(pass_=kind).set_to_current_time()
        logger.info(
            "scheduler: %s pass examined=%d done=%d skipped=%d failed=%d",
            kind, report.examined, report.done, report.skipped, report.failed,
        )  # fmt: skip


def scheduler_from_settings(service: ArchiveService) -> Scheduler:
    interval = settings.SCHEDULER_ARCHIVE_INTERVAL_SECONDS
    return Scheduler(
        service,
        leader_lock(interval),
        idle_for=timedelta(seconds=settings.ARCHIVE_IDLE_SECONDS),
        retention=timedelta(days=settings.ARCHIVE_RETENTION_DAYS),
        archive_every=interval,
        purge_every=settings.SCHEDULER_PURGE_INTERVAL_SECONDS,
    )
