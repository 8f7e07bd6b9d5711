"""In-memory `ArchiveSessionStore` for unit tests."""

from __future__ import annotations

from archive.ports import object_name, owner_prefix


class InMemoryArchiveStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.started = 0

    async def start(self) -> None:
        self.started += 1

    async def put(self, owner: str, session_id: str, data: bytes) -> str:
        name = object_name(owner, session_id)
        self.objects[name] = data
        return name

    async def get(self, owner: str, session_id: str) -> bytes | None:
        return self.objects.get(object_name(owner, session_id))

    async def list_by_owner(self, owner: str) -> list[str]:
        prefix = owner_prefix(owner)
        return sorted(n[len(prefix) :].removesuffix(".lsga") for n in self.objects if n.startswith(prefix))

    async def delete(self, owner: str, session_id: str) -> bool:
        return self.objects.pop(object_name(owner, session_id), None) is not None

    async def delete_by_owner(self, owner: str) -> int:
        names = [n for n in self.objects if n.startswith(owner_prefix(owner))]
        for name in names:
            del self.objects[name]
        return len(names)

    async def close(self) -> None:
        return None
