"""Per-owner data keys, wrapped by rotatable key-encryption keys (KEKs) from settings."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from archive import crypto
from archive.models import OwnerDataKey


def parse_keks(spec: str) -> dict[str, bytes]:
    """`id:base64key,id2:base64key` -> {id: key}; each key 32 bytes."""
    keks: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kek_id, sep, encoded = item.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ImproperlyConfigured(f"ARCHIVE_KEKS: key '{kek_id}' is not base64") from exc
        if not sep or not kek_id or len(key) != crypto.KEY_BYTES:
            raise ImproperlyConfigured(f"ARCHIVE_KEKS: '{kek_id}' must be id:<base64 of 32 random bytes>")
        keks[kek_id] = key
    return keks


def development_kek(path: Path) -> str:
    """A local KEK for development, made on first use and kept beside the database."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.b64encode(crypto.new_data_key()).decode())
        path.chmod(0o600)
    return f"dev:{path.read_text().strip()}"


class KeyRing:
    """Creates, finds and destroys owners' data keys.

    No key is cached in memory: once an owner's key row is deleted, no process
    can decrypt their archives any more.
    """

    def __init__(self, *, keks: Mapping[str, bytes], active_kek: str) -> None:
        if active_kek not in keks:
            raise ImproperlyConfigured(f"ARCHIVE_ACTIVE_KEK '{active_kek}' is not among ARCHIVE_KEKS")
        self._keks = dict(keks)
        self._active = active_kek

    async def key_for(self, owner: str) -> tuple[str, bytes]:
        """The owner's data key (id, bytes), made on first use."""
        return await sync_to_async(self._key_for)(owner)

    def _key_for(self, owner: str) -> tuple[str, bytes]:
        row = OwnerDataKey.objects.filter(owner=owner).first()
        if row is None:
            data_key = crypto.new_data_key()
            try:
                with transaction.atomic():
                    row = OwnerDataKey.objects.create(
                        id=uuid.uuid4(),
                        owner=owner,
                        kek_id=self._active,
                        wrapped_key=crypto.wrap_key(data_key, self._keks[self._active]),
                        created_at=datetime.now(UTC),
                    )
            except IntegrityError:  # another process made it first
                row = OwnerDataKey.objects.get(owner=owner)
        return str(row.id), self._unwrap(row)

    async def key_by_id(self, key_id: str) -> bytes | None:
        """The data key with this id, or None once destroyed."""
        return await sync_to_async(self._key_by_id)(key_id)

    def _key_by_id(self, key_id: str) -> bytes | None:
        try:
            row = OwnerDataKey.objects.filter(id=uuid.UUID(key_id)).first()
        except ValueError:
            return None
        return self._unwrap(row) if row is not None else None

    def _unwrap(self, row: OwnerDataKey) -> bytes:
        kek = self._keks.get(row.kek_id)
        if kek is None:
            raise ImproperlyConfigured(f"data key {row.id} is wrapped by KEK '{row.kek_id}', which is not configured")
        return crypto.unwrap_key(bytes(row.wrapped_key), kek)

    async def destroy(self, owner: str) -> bool:
        """Crypto-shred: delete the owner's data key. True if there was one."""
        deleted, _ = await OwnerDataKey.objects.filter(owner=owner).adelete()
        return bool(deleted)

    async def describe(self, owner: str) -> list[dict[str, str]]:
        """The owner's data key as their export lists it: its id, wrapping KEK and age, never the key."""
        return [
            {"id": str(row.id), "kek_id": row.kek_id, "created_at": row.created_at.isoformat()}
            async for row in OwnerDataKey.objects.filter(owner=owner)
        ]

    async def rewrap(self) -> int:
        """Re-wrap every data key under the active KEK (after a KEK rotation)."""
        return await sync_to_async(self._rewrap)()

    def _rewrap(self) -> int:
        moved = 0
        for row in OwnerDataKey.objects.exclude(kek_id=self._active).iterator():
            data_key = self._unwrap(row)
            OwnerDataKey.objects.filter(id=row.id, kek_id=row.kek_id).update(
                kek_id=self._active, wrapped_key=crypto.wrap_key(data_key, self._keks[self._active])
            )
            moved += 1
        return moved
