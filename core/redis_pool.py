"""redis-py's bounded pool with a cheap checkout: an idle connection is handed out and taken back
without the pool's condition, timer and observability hooks, as long as nobody waits.

`BlockingConnectionPool.get_connection` takes an `asyncio.Condition`, arms an async timeout (a
timer per checkout), enters an async context manager and awaits redis-py's metric hooks (which
record nothing unless an application turned redis-py's own OpenTelemetry metrics on); its
`release` takes the condition and the pool's lock again. Measured on a round trip of the turn
path's kind (EVALSHA and PEXPIRE, 16 at a time, against a local Redis): that was about a third
of the client's CPU for the round trip.

What stays as it was: the bound (`max_connections` connections at most, open or being opened),
the wait when every connection is out (the pool's own slow path, with its timeout and its
"No connection available."), redis-py's `Connection` objects with their `Retry`, the check
that a connection handed out has nothing unread and is still open (reconnected if not), and
the reconnect of a connection marked for it when it comes back. What changes besides the cost:
an idle connection that Redis closed is opened again before it is handed out (redis-py's own
check lets it through, and the command on it fails, or uses up one of its retries)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.event import AsyncAfterConnectionReleasedEvent, EventDispatcher
from redis.observability.providers import get_observability_instance


class BoundedPool(BlockingConnectionPool):
    """A `BlockingConnectionPool` whose checkout of an idle connection, and return of one nobody
    waits for, take no lock, timer or task. The pool's own slow path serves everything else:
    no idle connection, someone already waiting (so a fresh caller never overtakes a waiting
    one), redis-py's maintenance mode, or redis-py's own metrics turned on (their hooks run
    there)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiting = 0
        # The slow path only: with redis-py's own metrics on (they record from its hooks), or on
        # RESP3, where unread data on an idle connection may be a push notification to keep.
        self._slow_only = (
            get_observability_instance().get_provider_manager() is not None
            or str(self.connection_kwargs.get("protocol")) == "3"
        )

    def _quick(self) -> bool:
        """Whether a checkout or return may skip the slow path now."""
        return not (self._waiting or self._slow_only or self._in_maintenance)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not (self._available_connections and self._quick()):
            self._waiting += 1
            try:
                slow: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            finally:
                self._waiting -= 1
            return slow
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            # Open, and nothing unread on it: neither a reply its previous user left (a round trip
            # cut short) nor the end of the stream (Redis closed it while it sat idle). Either of
            # those is closed and opened again, where `ensure_connection` (with maintenance
            # notifications on "auto", redis-py's default) would hand out one Redis had closed.
            if not connection.is_connected or await connection.can_read():
                await connection.disconnect()
                await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if not self._quick():
            await super().release(connection)  # wakes a waiter
            return
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)
        # Re-authentication with a streaming credential provider listens to this.
        event = AsyncAfterConnectionReleasedEvent(connection)  # type: ignore[no-untyped-call]
        await cast(EventDispatcher, self._event_dispatcher).dispatch_async(event)
