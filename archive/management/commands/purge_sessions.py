"""Purge archived sessions older than the retention period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.management.commands._base import duration, run
from archive.wiring import get_archive_service


class Command(BaseCommand):
    help = "Delete archived sessions (objects, and data keys left unused) older than --older-than."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=duration, default=None, help="e.g. 90d (default: ARCHIVE_RETENTION_DAYS)"
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be purged.")

    def handle(self, *args: Any, older_than: timedelta | None, dry_run: bool, **options: Any) -> None:
        older_than = older_than or timedelta(days=settings.ARCHIVE_RETENTION_DAYS)
        report = run(get_archive_service().purge_expired(older_than=older_than, dry_run=dry_run, actor="operator"))
        if dry_run:
            self.stdout.write(f"dry run: {report.examined} archived sessions older than {older_than} would be purged")
            return
        self.stdout.write(f"purged {report.done} archived sessions older than {older_than} ({report.failed} failed)")
        if report.failed:
            raise CommandError(f"{report.failed} archived sessions could not be purged; run again")
