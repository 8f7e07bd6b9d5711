"""Per-owner data keys, stored wrapped by a key-encryption key from settings."""

from __future__ import annotations

from django.db import models


class OwnerDataKey(models.Model):
    """The AES-256 key that encrypts an owner's archives. Deleting the row is
    crypto-shredding: every copy of those archives, backups included, becomes noise."""

    id = models.UUIDField(primary_key=True, help_text="The data key id each archived object carries")
    owner = models.CharField(max_length=64, unique=True)
    kek_id = models.CharField(max_length=64, help_text="Which key-encryption key wraps it")
    wrapped_key = models.BinaryField()
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"data key {self.id} (wrapped by {self.kek_id})"
