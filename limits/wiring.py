"""The process's `OwnerLimiter`, chosen once from settings (`OWNER_LIMITER`)."""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.adapters import build_adapter
from limits.ports import OwnerLimiter


@functools.cache
def get_limiter() -> OwnerLimiter:
    limiter: OwnerLimiter = build_adapter(settings.OWNER_LIMITER)
    return limiter


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "OWNER_LIMITER":
        get_limiter.cache_clear()
