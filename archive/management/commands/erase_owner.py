"""Erase everything about one person, on an operator's erasure request (GDPR Art. 17)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.errors import OwnerBusy
from archive.management.commands._base import run
from archive.privacy import receipt_details
from archive.wiring import get_privacy_service
from core.auth.principal import owner_pseudonym
from sessions_app.public import session_store_in_process


class Command(BaseCommand):
    help = "Erase a person's sessions, archives, records and data key; prints the receipt."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sub", required=True, help="The person's subject at the identity provider.")
        parser.add_argument("--iss", required=True, help="The identity provider's issuer.")

    def handle(self, *args: Any, sub: str, iss: str, **options: Any) -> None:
        if not sub.strip() or not iss.strip():
            raise CommandError("--sub and --iss must not be empty.")
        if session_store_in_process():
            self.stderr.write("note: without REDIS_URL, active sessions live inside the gateway and are not reached")
        owner = owner_pseudonym(secret=settings.OWNER_PSEUDONYM_SECRET.encode(), issuer=iss, subject=sub)
        try:
            receipt = run(get_privacy_service().erase(owner, actor="operator"))
        except OwnerBusy as exc:
            raise CommandError(f"{exc.detail} Nothing was erased; run it again.") from exc
        self.stdout.write(json.dumps({"owner": owner, **receipt_details(receipt)}, indent=2))
