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


class OwnerGate(Protocol):
    """Keeps the work that writes an owner's archives and data key (archiving, resuming) apart
    from the work that destroys them (erasure, deleting a session, a purge destroying the key):
    many of the first at once, or one of the second alone. Shared by every process.

    Both kinds of hold lapse after `hold_seconds`, so a crashed process cannot close an owner
    for good; a hold that lapsed mid-work is reported when it is left.
    """

    async def enter(self, owner: str, token: str, *, hold_seconds: float) -> bool:
        """Start writing work on the owner's data; False (nothing held) while the owner is closed."""
        ...

    async def leave(self, owner: str, token: str) -> bool:
        """End it; False if its hold had lapsed meanwhile."""
        ...

    async def close(self, owner: str, token: str, *, hold_seconds: float) -> int:
        """Close the owner to new writing work, or renew the closing `token` holds. Returns how
        much writing work is still inside (0: the owner is the caller's alone), or -1 while
        another closing holds the owner (nothing taken)."""
        ...

    async def reopen(self, owner: str, token: str) -> None:
        """Give the owner back, if `token` still holds the closing."""
        ...

    async def close_connections(self) -> None: ...
