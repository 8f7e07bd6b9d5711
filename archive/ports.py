"""The `ArchiveSessionStore` port: where archived sessions rest, one object per session."""

from __future__ import annotations

from typing import Protocol


def object_name(owner: str, session_id: str) -> str:
    """Objects live under a per-owner prefix, so an owner's data can be listed and erased at once."""
    return f"owners/{owner}/sessions/{session_id}.lsga"


def owner_prefix(owner: str) -> str:
    return f"owners/{owner}/sessions/"


class ArchiveSessionStore(Protocol):
    """Sealed (compressed, encrypted) session objects. Adapters see only bytes, never content.

    Implementations raise `archive.errors.ArchiveUnavailable` when their storage
    cannot be reached.
    """

    async def start(self) -> None:
        """Prepare the storage (create the container) once per process; calling again is harmless."""
        ...

    async def put(self, owner: str, session_id: str, data: bytes) -> str:
        """Write (or overwrite) the session's object; returns its name."""
        ...

    async def get(self, owner: str, session_id: str) -> bytes | None:
        """The session's object, or None if there is none."""
        ...

    async def list_by_owner(self, owner: str) -> list[str]:
        """Ids of the owner's archived sessions."""
        ...

    async def delete(self, owner: str, session_id: str) -> bool:
        """Remove the session's object; False if there was none."""
        ...

    async def delete_by_owner(self, owner: str) -> int:
        """Remove every object of the owner; how many there were."""
        ...

    async def close(self) -> None: ...
