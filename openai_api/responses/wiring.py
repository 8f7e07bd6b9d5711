"""The process's response store and `ResponsesService`, chosen once from settings."""

from __future__ import annotations

import functools

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.adapters import build_adapter
from openai_api.responses.records import ResponseStore
from openai_api.responses.service import ResponsesService


@functools.cache
def get_response_store() -> ResponseStore:
    store: ResponseStore = build_adapter(settings.RESPONSE_STORE)
    return store


@functools.cache
def get_responses_service() -> ResponsesService:
    return ResponsesService(records=get_response_store(), ttl=settings.SESSION_TTL_SECONDS)


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in {"RESPONSE_STORE", "SESSION_TTL_SECONDS"}:
        get_response_store.cache_clear()
        get_responses_service.cache_clear()
