"""The in-memory `ResponseStore`: for tests and the embedded default (no REDIS_URL)."""

from __future__ import annotations

import functools
import time
from typing import Any

from openai_api.responses.records import ResponseRecord, described
from sessions_app.public import SideWrite


class MemoryResponseStore:
    side_write_target = "process"  # a record rides the in-process session store's appends

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], tuple[ResponseRecord, float]] = {}

    def _live(self, owner: str) -> list[tuple[ResponseRecord, float]]:
        now = time.monotonic()
        return [(r, until) for (holder, _), (r, until) in self._records.items() if holder == owner and until > now]

    async def save(self, record: ResponseRecord, *, ttl: int) -> None:
        self._keep(record, ttl)

    def side_write(self, record: ResponseRecord, *, ttl: int) -> SideWrite:
        return SideWrite(apply=functools.partial(self._keep, record, ttl))

    def _keep(self, record: ResponseRecord, ttl: int) -> None:
        self._records[(record.owner, record.id)] = (record, time.monotonic() + ttl)

    async def get(self, response_id: str, *, owner: str) -> ResponseRecord | None:
        kept = self._records.get((owner, response_id))
        if kept is None or kept[1] <= time.monotonic():
            return None
        return kept[0]

    async def delete(self, response_id: str, *, owner: str) -> bool:
        return self._records.pop((owner, response_id), None) is not None

    async def forget_session(self, owner: str, session_id: str) -> None:
        for record, _ in self._live(owner):
            if record.session_id == session_id:
                del self._records[(owner, record.id)]

    async def forget(self, owner: str) -> None:
        for key in [k for k in self._records if k[0] == owner]:
            del self._records[key]

    async def describe(self, owner: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        return sorted(
            (described(r, until - now) for r, until in self._live(owner)),
            key=lambda d: (d["created_at"], d["response_id"]),
        )

    async def close(self) -> None:
        pass
