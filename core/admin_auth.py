"""Admin sign-in through the organisation's OIDC provider (mozilla-django-oidc).

Only people whose token carries the configured group or role become staff, in
the read-only "Auditors" group; the others get no account at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from core.models import AuditEvent
from core.observability.tracing import current_trace_id

AUDITOR_GROUP = "Auditors"
AUDITOR_PERMISSIONS = [
    ("core", "view_auditevent"),
    ("sessions_app", "view_sessionrecord"),
    ("sessions_app", "view_transcript"),
]


def oidc_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: whether the admin login offers the organisation's sign-in."""
    return {"oidc_enabled": settings.ADMIN_OIDC_ENABLED}


def auditors_group() -> Group:
    group, _ = Group.objects.get_or_create(name=AUDITOR_GROUP)
    for app_label, codename in AUDITOR_PERMISSIONS:
        permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if permission is not None:
            group.permissions.add(permission)
    return group


class AuditorOIDCBackend(OIDCAuthenticationBackend):
    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def get_username(self, claims: dict[str, Any]) -> str:
        return str(claims.get("preferred_username") or claims.get("email") or claims["sub"])[:150]

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return self.UserModel.objects.filter(username=self.get_username(claims))

    def create_user(self, claims: dict[str, Any]) -> AbstractBaseUser | None:
        if not self.is_auditor(claims):
            return None  # not an auditor: no account, the sign-in fails
        user: AbstractBaseUser = self.UserModel.objects.create_user(
            self.get_username(claims), email=claims.get("email", "")
        )
        self.update_user(user, claims)
        return user

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        """Staff rights follow the provider's claim at every sign-in: a revoked role is revoked here too."""
        auditor = self.is_auditor(claims)
        user.is_staff = auditor
        user.save(update_fields=["is_staff"])
        group = auditors_group()
        if auditor:
            user.groups.add(group)
        else:
            user.groups.remove(group)
        return user

    @staticmethod
    def is_auditor(claims: dict[str, Any]) -> bool:
        value = claims.get(settings.ADMIN_OIDC_STAFF_CLAIM)
        granted = {value} if isinstance(value, str) else set(value or [])
        return bool(granted & set(settings.ADMIN_OIDC_STAFF_VALUES))


@receiver(user_logged_in)
def _audit_sign_in(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    AuditEvent.objects.create(
        at=datetime.now(UTC),
        actor=f"auditor:{user.get_username()}",
        action="admin.sign_in",
        target_type="user",
        target=user.get_username(),
        trace_id=current_trace_id() or "",
        details={"backend": getattr(user, "backend", "")},
    )
