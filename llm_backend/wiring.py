"""The process's `ChatBackend`, chosen once from the `CHAT_BACKEND` setting."""

from __future__ import annotations

import functools

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.adapters import build_adapter
from llm_backend.ports import ChatBackend


@functools.cache
def get_chat_backend() -> ChatBackend:
    backend: ChatBackend = build_adapter(settings.CHAT_BACKEND)
    return backend


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting == "CHAT_BACKEND":
        get_chat_backend.cache_clear()
