"""Sign-ins to the admin go on the trail, whichever backend let the person in."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest

from audit.services import audit_sync


@receiver(user_logged_in)
def _audit_sign_in(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    audit_sync(
        actor=f"auditor:{user.get_username()}",
        action="admin.sign_in",
        target_type="user",
        target=user.get_username(),
        details={"backend": getattr(user, "backend", "")},
    )
