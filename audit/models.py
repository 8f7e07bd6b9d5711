"""The audit trail: who did what to which session or owner, never content."""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200, help_text="owner:<pseudonym>, auditor:<user>, operator or scheduler")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=32)
    target = models.CharField(max_length=200, db_index=True)
    owner = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="The pseudonym of the owner it concerns, when one does"
    )
    outcome = models.CharField(max_length=16, default="success")
    trace_id = models.CharField(max_length=32, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Counts, reasons and ids; never message content.")

    class Meta:
        db_table = "core_auditevent"  # where it was made, when the trail was part of core
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["target_type", "target"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target_type}:{self.target} {self.outcome}"
