"""One process's counts: the embedded default, and the fake beside `OwnerLimiter` for tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from limits.errors import OwnerSocketLimit, OwnerStreamLimit
from limits.policy import WINDOW, Limits, judge, owner_counts


@dataclass(slots=True)
class _MinuteCounts:
    """One owner's counts in one minute window of `MemoryLimiter`."""

    requests: int = 0
    tokens: int = 0


class MemoryLimiter:
    """One process's counts: the embedded default, and the unit tests'."""

    def __init__(self, *, clock: Callable[[], float] = time.time, **limits: int) -> None:
        self.limits = Limits(**limits)
        self._clock = clock
        self._windows: dict[tuple[str, int], _MinuteCounts] = {}
        self._streams: dict[str, set[str]] = {}
        self._sockets: dict[str, set[str]] = {}

    def _window(self, owner: str) -> _MinuteCounts:
        window = int(self._clock() // WINDOW)
        counts = self._windows.get((owner, window))
        if counts is None:
            if len(self._windows) > 10_000:  # forget past minutes
                self._windows = {k: v for k, v in self._windows.items() if k[1] == window}
            counts = self._windows[(owner, window)] = _MinuteCounts()
        return counts

    async def admit(self, owner: str) -> None:
        counts = self._window(owner)
        counts.requests += 1
        judge(self.limits, counts.requests, counts.tokens, self._clock())

    async def charge(self, owner: str, tokens: int) -> None:
        self._window(owner).tokens += tokens

    async def open_stream(self, owner: str, stream_id: str) -> None:
        open_now = self._streams.setdefault(owner, set())
        if self.limits.streams_per_owner and len(open_now) >= self.limits.streams_per_owner:
            raise OwnerStreamLimit(retry_after=1)
        open_now.add(stream_id)

    async def close_stream(self, owner: str, stream_id: str) -> None:
        self._streams.get(owner, set()).discard(stream_id)

    async def open_socket(self, owner: str, socket_id: str) -> None:
        open_now = self._sockets.setdefault(owner, set())
        full = self.limits.sockets_per_owner and len(open_now) >= self.limits.sockets_per_owner
        if full and socket_id not in open_now:
            raise OwnerSocketLimit(retry_after=1)
        open_now.add(socket_id)

    async def close_socket(self, owner: str, socket_id: str) -> None:
        open_now = self._sockets.get(owner, set())
        open_now.discard(socket_id)
        if not open_now:
            self._sockets.pop(owner, None)

    async def forget(self, owner: str) -> None:
        self._streams.pop(owner, None)
        self._sockets.pop(owner, None)
        for key in [k for k in self._windows if k[0] == owner]:
            del self._windows[key]

    async def describe(self, owner: str) -> dict[str, int]:
        counts = self._windows.get((owner, int(self._clock() // WINDOW)), _MinuteCounts())
        return owner_counts(
            counts.requests, counts.tokens, len(self._streams.get(owner, ())), len(self._sockets.get(owner, ()))
        )

    async def close(self) -> None:
        pass
