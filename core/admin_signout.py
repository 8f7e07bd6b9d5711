"""Signing out of the admin: the Django session ends and, for someone who came through the
organisation's provider, so does the provider's session (OpenID Connect RP-initiated logout)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.views.decorators.cache import never_cache


def provider_logout_url(request: HttpRequest) -> str:
    """Where to send the browser once the Django session is over: the provider's end-session
    endpoint with the ID token as a hint and the way back, or the login page when this session
    did not come through the provider (or the provider has no end-session endpoint)."""
    id_token = request.session.get("oidc_id_token")
    if not id_token:
        return resolve_url(settings.LOGOUT_REDIRECT_URL)
    return end_session_url(request, id_token=id_token) or resolve_url(settings.LOGOUT_REDIRECT_URL)


def end_session_url(request: HttpRequest, *, id_token: str | None) -> str | None:
    """The provider's end-session URL coming back to the admin's login page (RP-initiated logout
    1.0: the ID token as hint when there is one, the client id always); None without one."""
    endpoint = settings.ADMIN_OIDC_END_SESSION_ENDPOINT
    if not (settings.ADMIN_OIDC_ENABLED and endpoint):
        return None
    params = {
        **({"id_token_hint": id_token} if id_token else {}),
        "post_logout_redirect_uri": request.build_absolute_uri(reverse("admin:login")),
        "client_id": settings.OIDC_RP_CLIENT_ID,
    }
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


@never_cache
def sign_out(request: HttpRequest) -> HttpResponse:
    """The admin's "Log out" (POST, CSRF-checked like the admin's own): Django's logout, then
    on to the provider when the session came through it."""
    destination = provider_logout_url(request) if request.session.get("oidc_id_token") else None
    response: HttpResponse = admin.site.logout(request)
    if destination is not None and response.status_code < 400:  # not the 405 of a GET
        return HttpResponseRedirect(destination)
    return response
