"""The audit trail (who did what to which session or owner, never content) and admin OIDC links."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200, help_text="owner:<pseudonym>, auditor:<user>, operator or scheduler")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=32)
    target = models.CharField(max_length=200, db_index=True)
    outcome = models.CharField(max_length=16, default="success")
    trace_id = models.CharField(max_length=32, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Counts, reasons and ids; never message content.")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["target_type", "target"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target_type}:{self.target} {self.outcome}"


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
