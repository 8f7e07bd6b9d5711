"""Admin OIDC links (the audit trail is the audit app's)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class OIDCIdentity(models.Model):
    """Which admin account an identity at the organisation's OIDC provider signs in as.

    Linked by the provider's issuer and subject only: a username or email is the
    provider's to change (and an email may be unverified), so neither ever picks an
    account. Only accounts made for an OIDC sign-in have a link; local accounts
    (the superuser) never do.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.subject}"
