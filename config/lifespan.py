"""ASGI lifespan: prepare the archive at start-up, run the embedded scheduler, close
long-lived connections at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

from prometheus_client import start_http_server

from core.observability import multiprocess
from core.observability.gauges import refresh_gauges

logger = logging.getLogger(__name__)
YOUNG_COLLECTION_AFTER = 10_000  # new objects (CPython's default: 700)


def settle_the_heap() -> None:
    """Leave what start-up built (Django, the URL resolvers, the clients: some 170,000 objects)
    out of the garbage collector's later passes: collected once, then frozen. Each full
    collection had walked all of them again, about every 1,500 turns, for some 0.1 s of CPU
    (`gc.freeze`, as CPython's documentation suggests for long-lived start-up state). Cycles
    made after start-up are still found and freed.

    The youngest generation is collected after `YOUNG_COLLECTION_AFTER` new objects rather than
    CPython's 700: each of its passes walks every object the turns in flight hold (coroutines,
    futures, spans), some 0.25 ms a pass at 16 clients, and with 700 it ran about every
    eleventh turn. A pass now runs less often, and finds the same garbage (cycles only: the
    rest is freed as it is dropped)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, older, oldest)


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
        settle_the_heap()

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
