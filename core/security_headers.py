"""The response headers Django's security middlewares add, for the consumers that answer without Django.

`SecurityMiddleware` and `XFrameOptionsMiddleware` decorate every response Django
serves; a consumer routed ahead of Django (`config/asgi.py`) that serves a route
Django served before sends the same headers from the same settings, so a client
cannot tell the two apart. The redirect to HTTPS is not mirrored: a consumer hands
such a request to Django (`needs_django`), which redirects it as it always has.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware


def needs_django(request: HttpRequest) -> bool:
    """Whether Django must answer this request itself: a host it refuses, or an HTTP request
    that `SECURE_SSL_REDIRECT` sends to HTTPS."""
    try:
        request.get_host()  # DisallowedHost: Django answers 400 and logs it, as for any route
    except Exception:  # noqa: BLE001 - whatever get_host refuses, Django's own handling answers it
        return True
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        # Django's own test of the exemptions.
        return SecurityMiddleware(_unused).process_request(request) is not None
    return False


def security_headers(request: HttpRequest) -> list[tuple[bytes, bytes]]:
    """The headers SecurityMiddleware and XFrameOptionsMiddleware add to a response to `request`:
    their own code run on an empty response. Of the request they read only whether it came
    over HTTPS; the rest is settings. So they are run once for each answer to that (about 40 µs
    a request otherwise), and again after a setting changed (tests change the ones they read)."""
    return list(_headers(secure=request.is_secure()))


@functools.cache
def _headers(*, secure: bool) -> tuple[tuple[bytes, bytes], ...]:
    request = _Request(secure=secure)
    response = HttpResponse()
    del response.headers["Content-Type"]
    SecurityMiddleware(_unused).process_response(request, response)
    XFrameOptionsMiddleware(_unused).process_response(request, response)
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers.items())


class _Request(HttpRequest):
    """A request that is over HTTPS or not, and nothing more."""

    def __init__(self, *, secure: bool) -> None:
        super().__init__()
        self._secure = secure

    def is_secure(self) -> bool:
        return self._secure


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    _headers.cache_clear()


def _unused(request: HttpRequest) -> HttpResponse:
    raise AssertionError("only the middlewares' process_request/process_response are called")
