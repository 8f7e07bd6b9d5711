"""Print a development bearer token signed by the gateway's local key (development mode only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.auth import devkeys
from core.auth.principal import READ_SCOPE, WRITE_SCOPE


class Command(BaseCommand):
    help = "Print a development bearer token (only the token, on stdout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sub", required=True, help="The subject (user) the token speaks for.")
        parser.add_argument("--scope", default=f"{READ_SCOPE} {WRITE_SCOPE}", help="Space-separated scopes.")
        parser.add_argument("--ttl", type=int, default=3600, help="Lifetime in seconds (default 3600).")

    def handle(self, *args: Any, sub: str, scope: str, ttl: int, **options: Any) -> None:
        if not settings.DEV_MODE:
            raise CommandError("Development mode is off (DEV_MODE); development tokens would be refused.")
        if not sub.strip():
            raise CommandError("--sub must not be empty.")
        if ttl <= 0:
            raise CommandError("--ttl must be a positive number of seconds.")
        key = devkeys.load_or_create_key(Path(settings.DEV_SIGNING_KEY_PATH))
        token = devkeys.mint(
            key,
            issuer=settings.DEV_TOKEN_ISSUER,
            audience=settings.JWT_AUDIENCE[0],
            subject=sub,
            scopes=scope,
            ttl=ttl,
        )
        self.stdout.write(token)
