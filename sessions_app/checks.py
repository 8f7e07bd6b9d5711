"""System checks: the turn lock must outlast every wait of a turn that does not renew it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


def longest_unrenewed_wait(options: dict[str, Any]) -> tuple[float, str]:
    """The longest a live turn can hold its lock without renewing it, and what makes it up.

    A JSON turn renews nothing until the model answers: each model server of a route
    is tried in turn, each for up to the call's deadline. A streamed turn renews the
    lock as deltas flow (every third of the lock), so what must fit is the wait for the
    first delta on every server of a route, and a silence after a renewal.
    """
    routes = options.get("routes") or {"*": [options.get("target")]}
    servers = max((len(targets) for targets in routes.values()), default=1) or 1
    timeout = float(options.get("timeout", 0))
    first = float(options.get("connect_timeout", 0)) + float(options.get("first_delta_timeout", 0))
    waits = {
        f"{servers} model server(s) x BACKEND_TIMEOUT_SECONDS ({timeout:g})": servers * timeout,
        f"{servers} model server(s) x (BACKEND_CONNECT_TIMEOUT_SECONDS + BACKEND_FIRST_DELTA_TIMEOUT_SECONDS)"
        f" ({first:g})": servers * first,
    }
    return max((seconds, name) for name, seconds in waits.items())


@register()
def turn_lock_outlasts_backend_deadlines(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """A lock that expires under a live turn lets a second turn into the same session."""
    lock = float(settings.SESSION_LIMITS["TURN_LOCK_SECONDS"])
    backend: dict[str, Any] = settings.CHAT_BACKEND
    options: dict[str, Any] = dict(backend.get("OPTIONS") or {})
    errors: list[CheckMessage] = []
    wait, what = longest_unrenewed_wait(options)
    if lock <= wait:
        errors.append(
            Error(
                f"TURN_LOCK_SECONDS ({lock:g}) must exceed the longest wait of a turn for the model: "
                f"{what} = {wait:g}.",
                id="sessions_app.E001",
            )
        )
    silence = float(options.get("silence_timeout", 0))
    if lock <= silence + lock / 3:
        errors.append(
            Error(
                f"TURN_LOCK_SECONDS ({lock:g}) must exceed BACKEND_SILENCE_TIMEOUT_SECONDS ({silence:g}) by half "
                "again: a stream renews its lock every third of it, only when a delta arrives.",
                id="sessions_app.E002",
            )
        )
    return errors
