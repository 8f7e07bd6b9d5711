"""The per-owner request limit as a DRF throttle, for every app's DRF views."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from core.auth.principal import Principal
from limits.wiring import get_limiter


class OwnerRateLimit(BaseThrottle):
    """The per-owner request limit (shared by every instance), for the DRF views."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if isinstance(request.user, Principal):
            async_to_sync(get_limiter().admit)(request.user.owner)  # raises RateLimited (429)
        return True
