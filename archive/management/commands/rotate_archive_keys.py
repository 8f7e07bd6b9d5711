"""Re-wrap every owner's data key under the active key-encryption key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from archive.management.commands._base import run
from archive.wiring import get_key_ring


class Command(BaseCommand):
    help = "After adding a KEK to ARCHIVE_KEKS and making it ARCHIVE_ACTIVE_KEK: re-wrap all data keys with it."

    def handle(self, *args: Any, **options: Any) -> None:
        moved = run(get_key_ring().rewrap())
        self.stdout.write(f"re-wrapped {moved} data keys; the old KEK can be removed once this reports 0")
