"""Archive sessions idle for longer than a duration (default: ARCHIVE_IDLE_SECONDS)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.management.commands._base import duration, require_shared_store, run
from archive.wiring import get_archive_service


class Command(BaseCommand):
    help = "Move sessions idle for longer than --idle-for from Redis to the archive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--idle-for", type=duration, default=None, help="e.g. 30m, 12h, 7d (default: ARCHIVE_IDLE_SECONDS)"
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be archived.")

    def handle(self, *args: Any, idle_for: timedelta | None, dry_run: bool, **options: Any) -> None:
        require_shared_store()
        idle_for = idle_for or timedelta(seconds=settings.ARCHIVE_IDLE_SECONDS)
        report = run(get_archive_service().archive_idle(idle_for=idle_for, dry_run=dry_run, actor="operator"))
        if dry_run:
            self.stdout.write(f"dry run: {report.examined} sessions idle for more than {idle_for} would be archived")
            return
        self.stdout.write(
            f"archived {report.done} sessions idle for more than {idle_for} "
            f"({report.skipped} skipped mid-turn, {report.failed} failed)"
        )
        if report.failed:
            raise CommandError(f"{report.failed} sessions could not be archived; they stay in Redis for the next pass")
