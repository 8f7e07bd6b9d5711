"""The long-running scheduler: archives idle sessions and purges expired archives, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from archive.management.commands._base import require_shared_store, run
from archive.scheduler import scheduler_from_settings
from archive.wiring import get_archive_service

logger = logging.getLogger("archive.scheduler")


class Command(BaseCommand):
    help = "Archive idle sessions and purge expired archives on intervals from settings; stops on SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one archive and one purge pass, then exit.")

    def handle(self, *args: Any, once: bool, **options: Any) -> None:
        require_shared_store()
        run(self._run(once))
        self.stdout.write("scheduler stopped")

    async def _run(self, once: bool) -> None:
        scheduler = scheduler_from_settings(get_archive_service())
        # SIGTERM (and Ctrl-C) end the current pass between two sessions, then the lock is released,
        # with --once too: the next run, or another replica, need not wait for the lock to lapse.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if once:
            if not await scheduler.run_once(stop):
                self.stdout.write("another replica holds the scheduler lock; nothing done")
            return
        self.stdout.write("scheduler started")
        self.stdout.flush()
        await scheduler.run(stop)
