"""`ArchiveSessionStore` on a local directory: the embedded default for one machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from archive.errors import ArchiveUnavailable
from archive.ports import object_name, owner_prefix


class FilesystemArchiveStore:
    """Objects as files under `root`; each written to a temporary name, synced, then renamed,
    so a crash never leaves half an object under the real name."""

    def __init__(self, *, root: str) -> None:
        self._root = Path(root)

    async def start(self) -> None:
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)

    def _path(self, owner: str, session_id: str) -> Path:
        return self._root / object_name(owner, session_id)

    async def put(self, owner: str, session_id: str, data: bytes) -> str:
        await asyncio.to_thread(self._write, self._path(owner, session_id), data)
        return object_name(owner, session_id)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ArchiveUnavailable() from exc

    async def get(self, owner: str, session_id: str) -> bytes | None:
        path = self._path(owner, session_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArchiveUnavailable() from exc

    async def list_by_owner(self, owner: str) -> list[str]:
        folder = self._root / owner_prefix(owner)
        names = await asyncio.to_thread(
            lambda: sorted(p.name for p in folder.glob("*.lsga")) if folder.exists() else []
        )
        return [n.removesuffix(".lsga") for n in names]

    async def delete(self, owner: str, session_id: str) -> bool:
        try:
            await asyncio.to_thread(self._path(owner, session_id).unlink)
        except FileNotFoundError:
            return False
        return True

    async def delete_by_owner(self, owner: str) -> int:
        count = len(await self.list_by_owner(owner))
        folder = self._root / owner_prefix(owner)
        await asyncio.to_thread(shutil.rmtree, folder.parent, True)
        return count

    async def close(self) -> None:
        return None
