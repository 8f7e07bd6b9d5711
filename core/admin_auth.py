"""Admin sign-in through the organisation's OIDC provider (mozilla-django-oidc).

Only people whose token carries the configured group or role become staff, in
the read-only "Auditors" group; the others get no account at all. Accounts are
linked to the provider's (issuer, subject) by core.models.OIDCIdentity.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from core.admin_id_token import CheckedIDToken
from core.admin_signin import refuse
from core.auditors import auditor_permissions
from core.models import OIDCIdentity

AUDITOR_GROUP = "Auditors"


def oidc_urlpatterns() -> list[URLPattern]:
    """mozilla-django-oidc's views, each answering 404 unless admin OIDC is on: off, they
    would still start a sign-in and write a session row for every anonymous hit."""
    from mozilla_django_oidc import urls

    from core.admin_signin import refused

    return [
        URLPattern(pattern.pattern, _only_when_enabled(pattern.callback), pattern.default_args, pattern.name)
        for pattern in [*urls.urlpatterns, path("denied/", refused, name="oidc_refused")]
        if isinstance(pattern, URLPattern)
    ]


def _only_when_enabled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)  # keeps csrf_exempt and the other markers
    def gated(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.ADMIN_OIDC_ENABLED:
            raise Http404
        return view(request, *args, **kwargs)

    return gated


def oidc_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: whether the admin login offers the organisation's sign-in."""
    return {"oidc_enabled": settings.ADMIN_OIDC_ENABLED}


def oidc_username(issuer: str, subject: str, claims: dict[str, Any]) -> str:
    """A readable username of its own for an OIDC account: the provider's name for the person
    plus a digest of (issuer, subject), so it never equals a local account's username."""
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:12]
    name = str(claims.get("preferred_username") or claims.get("email") or "user")
    name = re.sub(r"[^\w.@+-]", "_", name)[:120]
    return f"{name}~oidc-{digest}"


def auditors_group() -> Group:
    group, _ = Group.objects.get_or_create(name=AUDITOR_GROUP)
    for app_label, codename in auditor_permissions():  # each app grants its own (core.auditors)
        permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if permission is not None:
            group.permissions.add(permission)
    return group


class AuditorOIDCBackend(CheckedIDToken, OIDCAuthenticationBackend):
    """Signs in the identity (issuer, subject) the provider vouched for, as the account made
    for that identity and no other.

    Never by username or email (a provider's users choose those, and an email may be
    unverified), never as a local account, never as a superuser; staff rights follow
    the staff claim at every sign-in, and someone without it is not signed in.
    """

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = self.get_userinfo(access_token, id_token, payload)
        issuer, subject = self.identity(payload, claims)
        with transaction.atomic():
            link = OIDCIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
            if link is None:
                return self.create_user_for(issuer, subject, claims)
            return self.update_user(link.user, claims)

    def identity(self, payload: dict[str, Any], claims: dict[str, Any]) -> tuple[str, str]:
        """(issuer, subject) from the verified ID token; the userinfo must be about the same subject."""
        issuer, subject = str(payload.get("iss") or ""), str(payload.get("sub") or "")
        if not issuer or not subject:
            raise SuspiciousOperation("The ID token has no issuer or subject.")
        expected = settings.ADMIN_OIDC_ISSUER
        if expected and issuer.rstrip("/") != expected.rstrip("/"):
            raise SuspiciousOperation("The ID token is from another issuer.")
        if str(claims.get("sub") or "") != subject:  # OIDC Core 5.3.2: else the userinfo must not be used
            raise SuspiciousOperation("The userinfo is about another subject.")
        return issuer, subject

    def create_user_for(self, issuer: str, subject: str, claims: dict[str, Any]) -> Any:
        if not self.is_auditor(claims):
            refuse(self.request, "no_auditor_role")
            return None  # not an auditor: no account, the sign-in fails
        username = oidc_username(issuer, subject, claims)
        if self.UserModel.objects.filter(username=username).exists():
            raise SuspiciousOperation("An account with this identity's username exists and is not linked to it.")
        user = self.UserModel(username=username, email=str(claims.get("email") or "")[:254])
        user.set_unusable_password()  # signs in through the provider only
        user.save()
        OIDCIdentity.objects.create(user=user, issuer=issuer, subject=subject)
        return self.update_user(user, claims)

    def create_user(self, claims: dict[str, Any]) -> Any:
        raise NotImplementedError("get_or_create_user links by issuer and subject")

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        raise NotImplementedError("get_or_create_user links by issuer and subject")

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        """Staff rights follow the provider's claim at every sign-in: a revoked role is revoked
        here too, and that sign-in fails. Superuser is never granted through the provider."""
        auditor = self.is_auditor(claims)
        user.is_staff = auditor
        user.is_superuser = False
        user.save(update_fields=["is_staff", "is_superuser"])
        group = auditors_group()
        if auditor:
            user.groups.add(group)
            return user
        user.groups.remove(group)
        refuse(self.request, "no_auditor_role")
        return None

    @staticmethod
    def is_auditor(claims: dict[str, Any]) -> bool:
        value = claims.get(settings.ADMIN_OIDC_STAFF_CLAIM)
        granted = {value} if isinstance(value, str) else set(value or [])
        return bool(granted & set(settings.ADMIN_OIDC_STAFF_VALUES))
