"""ASGI lifespan: prepare the archive at start-up, run the embedded scheduler, close
long-lived connections at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import start_http_server

from core.observability import multiprocess
from core.observability.gauges import refresh_gauges

logger = logging.getLogger(__name__)


class LifespanApp:
    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._startup()
                except Exception as exc:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup(self) -> None:
        # Imported here: the app registry is ready only once Django's application exists.
        from django.conf import settings

        from archive.scheduler import scheduler_from_settings
        from archive.wiring import get_archive_service, get_archive_store
        from core.shutdown import drain

        await get_archive_store().start()  # the container is created once, here
        drain.install()  # SIGTERM drains the turns first; the server's handler runs after
        self._stop.clear()
        if settings.SCHEDULER_EMBEDDED:
            scheduler = scheduler_from_settings(get_archive_service())
            self._scheduler = asyncio.create_task(scheduler.run(self._stop))
        if settings.METRICS_BIND:
            if not multiprocess.enabled():  # else core.serving serves it, once for every worker
                host, _, port = settings.METRICS_BIND.rpartition(":")
                start_http_server(int(port), addr=host or "127.0.0.1")
            self._gauges = asyncio.create_task(self._refresh_gauges())

    async def _refresh_gauges(self) -> None:
        """On its own listener nobody asks us before a scrape: refresh now and then instead."""
        while not self._stop.is_set():
            await refresh_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=15)

    async def _shutdown(self) -> None:
        from archive.wiring import get_archive_store
        from limits.wiring import get_limiter
        from sessions_app.wiring import get_session_manager

        self._stop.set()
        for task in (self._scheduler, self._gauges):
            if task is not None:
                await task
        try:
            await get_limiter().close()  # the counts not yet sent to Redis
            await get_session_manager().close()
            await get_archive_store().close()
        except Exception:
            logger.warning("closing connections failed", exc_info=True)
