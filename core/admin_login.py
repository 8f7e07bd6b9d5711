"""The admin's password sign-in, throttled: after repeated failures an account name, and a
client, is locked out for a while.

Counts live in Django's cache, which is Redis (shared by every process) whenever
REDIS_URL is set, as the other limits are. A lockout answers the same for a name
that has an account and one that has not, whatever the password, so it reveals
neither which accounts exist nor whether a guess was right.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest

LOCKED_MESSAGE = "Too many failed sign-ins. Try again later."


def _keys(request: HttpRequest | None, username: str) -> tuple[str, str]:
    # Hashed: the cache holds no account names or addresses in clear.
    name = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    client = (request.META.get("REMOTE_ADDR") if request is not None else None) or "unknown"
    return f"admin-login:account:{name}", "admin-login:client:" + hashlib.sha256(client.encode()).hexdigest()[:32]


def is_locked(request: HttpRequest | None, username: str) -> bool:
    account, client = _keys(request, username)
    counts = cache.get_many([account, client])
    return bool(
        int(counts.get(account, 0)) >= settings.ADMIN_LOGIN_MAX_FAILURES
        or int(counts.get(client, 0)) >= settings.ADMIN_LOGIN_MAX_FAILURES_PER_CLIENT
    )


def record_failure(request: HttpRequest | None, username: str) -> None:
    """Count a failure for the name and the client; each count lasts the lockout period from
    its first failure."""
    for key in _keys(request, username):
        if not cache.add(key, 1, timeout=settings.ADMIN_LOGIN_LOCKOUT_SECONDS):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.ADMIN_LOGIN_LOCKOUT_SECONDS)


def record_success(request: HttpRequest | None, username: str) -> None:
    """A right password clears the name's count (not the client's: one client guessing many
    names stays counted)."""
    cache.delete(_keys(request, username)[0])


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing to check any password while the name or client is
    locked out."""

    def clean(self) -> dict[str, Any]:
        username = str(self.data.get("username") or "")
        if username and is_locked(self.request, username):
            raise forms.ValidationError(LOCKED_MESSAGE, code="locked")
        try:
            cleaned = super().clean()
        except forms.ValidationError as exc:
            if username and any(error.code == "invalid_login" for error in exc.error_list):
                record_failure(self.request, username)
            raise
        if username:
            record_success(self.request, username)
        return cleaned
