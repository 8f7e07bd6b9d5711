"""The end of the admin's OIDC sign-in: the provider's callback, and the page that says why a
sign-in was refused (a 403 page, never a stack trace)."""

from __future__ import annotations

from typing import Any

import jwt
import requests
import structlog
from django.contrib import admin
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView

from core.admin_signout import end_session_url

log = structlog.get_logger(__name__)

REFUSAL_KEY = "admin_oidc_refusal"
# What the refused page says for each reason; none names a token, a code or a claim's value.
REFUSALS = {
    "no_auditor_role": (
        "Your account at the identity provider does not hold the auditor role, so it cannot "
        "sign in to this console. Ask whoever manages roles there to grant it, then sign in again."
    ),
    "provider_denied": "The identity provider did not sign you in.",
    "invalid_response": (
        "The identity provider's answer could not be verified, so you were not signed in. "
        "Start the sign-in again; if this keeps happening, tell the gateway's operators."
    ),
    "provider_refused": (
        "The identity provider could not complete the sign-in (it refused the request or did not "
        "answer). Start the sign-in again."
    ),
}


def refuse(request: HttpRequest, reason: str) -> None:
    """Remember why this browser's sign-in was refused, for the refused page."""
    request.session[REFUSAL_KEY] = reason


class AuditorCallbackView(OIDCAuthenticationCallbackView):
    """mozilla-django-oidc's callback, with every failure ending on the refused page: a state
    that this browser did not start, a forged or misaddressed ID token, a nonce mismatch, or a
    code the provider will not exchange (replayed, expired) would otherwise be a 400 or a 500."""

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)  # type: ignore[no-any-return]
        except SuspiciousOperation as exc:
            reason, error = "invalid_response", str(exc)  # our own fixed messages, never a token
        except (requests.RequestException, jwt.InvalidTokenError, ValueError, KeyError) as exc:
            reason, error = "provider_refused", type(exc).__name__
        log.warning("admin_oidc_sign_in_refused", reason=reason, error=error)
        refuse(request, reason)
        return self.login_failure()

    def login_failure(self) -> HttpResponse:
        if self.request.GET.get("error"):
            refuse(self.request, "provider_denied")
        return super().login_failure()  # type: ignore[no-any-return]


def refused(request: HttpRequest) -> HttpResponse:
    """Why the last sign-in through the provider failed."""
    reason = request.session.pop(REFUSAL_KEY, "invalid_response")
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Sign-in refused",
        "message": REFUSALS.get(reason, REFUSALS["invalid_response"]),
        "reason": reason,
        # Signed in at the provider as someone without the role: the way to try another account.
        "switch_account_url": end_session_url(request, id_token=None),
    }
    return render(request, "core/admin_refused.html", context, status=403)
