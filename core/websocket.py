"""Origin checking for WebSockets, as browsers need it and other clients do not."""

from __future__ import annotations

from typing import Any
from urllib.parse import ParseResult

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Channels' origin check, letting through clients that send no Origin at all.

    Browsers always send Origin, and a page from another site is exactly what
    the check must stop. Command-line and server-side clients send none, and
    they cannot be used for cross-site WebSocket hijacking (nor could a page:
    the gateway authenticates with bearer tokens, never cookies).
    """

    def __init__(self, application: Any) -> None:
        origins = settings.WEBSOCKET_ALLOWED_ORIGINS or list(settings.ALLOWED_HOSTS)
        super().__init__(application, origins)

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))
