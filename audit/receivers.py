"""Sign-ins to and sign-outs from the admin go on the trail, whichever backend let the person in."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from audit.services import audit_sync
from core.admin_actor import admin_actor


@receiver(user_logged_in)
def _audit_sign_in(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    audit_sync(
        actor=admin_actor(user),
        action="admin.sign_in",
        target_type="user",
        target=user.get_username(),
        details={"backend": getattr(user, "backend", ""), "break_glass": user.is_superuser},
    )


@receiver(user_logged_out)
def _audit_sign_out(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    audit_sync(
        actor=admin_actor(user),
        action="admin.sign_out",
        target_type="user",
        target=user.get_username(),
        details={"provider_logout": bool(request.session.get("oidc_id_token"))},
    )
