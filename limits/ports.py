"""The port every per-owner limiter implements (in memory: limits.memory; Redis: limits.redis)."""

from __future__ import annotations

from typing import Protocol

from limits.policy import Limits


class OwnerLimiter(Protocol):
    limits: Limits

    async def admit(self, owner: str) -> None:
        """Count one request; raise `RateLimited` if the owner is over a per-minute limit."""
        ...

    async def charge(self, owner: str, tokens: int) -> None:
        """Add model tokens the owner used to this minute's count."""
        ...

    async def open_stream(self, owner: str, stream_id: str) -> None:
        """Raise `OwnerStreamLimit` if the owner streams the most allowed already; else count it."""
        ...

    async def close_stream(self, owner: str, stream_id: str) -> None: ...

    async def open_socket(self, owner: str, socket_id: str) -> None:
        """Raise `OwnerSocketLimit` if the owner holds the most WebSockets allowed already; else
        count this one. Again with the same id: keep it counted (its entry lapses otherwise
        after `socket_seconds`)."""
        ...

    async def close_socket(self, owner: str, socket_id: str) -> None: ...

    async def forget(self, owner: str) -> None:
        """Drop every count about the owner (erasure)."""
        ...

    async def describe(self, owner: str) -> dict[str, int]:
        """The counts kept about the owner now, for their export."""
        ...

    async def close(self) -> None:
        """Send what is still unsent; close connections."""
        ...
