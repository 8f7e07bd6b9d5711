"""What the admin audits about a session: its metadata, never its content."""

from __future__ import annotations

from django.db import models


class SessionRecord(models.Model):
    """One row per session, kept up to date on create, end, archive, resume and erasure
    (not on every turn: counters are as of the last of those). Erasure leaves a tombstone:
    status erased, no object name, only what the audit trail holds about the session anyway."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        ENDED = "ended"
        ARCHIVED = "archived"
        PURGED = "purged"
        ERASED = "erased"

    id = models.UUIDField(primary_key=True)
    owner = models.CharField(max_length=64, db_index=True, help_text="The owner's pseudonym")
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    model = models.CharField(max_length=200)
    created_at = models.DateTimeField(db_index=True)
    last_activity_at = models.DateTimeField()
    archived_at = models.DateTimeField(null=True, blank=True, db_index=True)
    erased_at = models.DateTimeField(null=True, blank=True)
    object_name = models.CharField(max_length=300, blank=True, help_text="The archive object, while there is one")
    message_count = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("view_transcript", "Can open a session's transcript (each opening is audited)")]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"
