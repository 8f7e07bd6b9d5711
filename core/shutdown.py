"""Graceful shutdown: on SIGTERM, stop taking turns, let running ones finish, then leave.

The ASGI server's own SIGTERM handling closes WebSockets at once and gives
streams no word of why. So the gateway takes SIGTERM first:

1. it stops taking turns (`503 shutting_down`; `/readyz` fails, so the load
   balancer stops sending traffic) while everything else is still served;
2. running turns get up to `SHUTDOWN_GRACE_SECONDS` to finish;
3. those still running are cancelled: each keeps the reply it streamed so far
   (`incomplete`), releases its session's lock, and tells its client with an
   `error` event `shutting_down`;
4. then the server's own handler runs and the process exits as usual.

A second SIGTERM (or SIGINT) skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from django.conf import settings

from core.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

# The cancellation message that marks a turn stopped by the shutdown, not by its client.
SHUTDOWN = "gateway shutting down"
# After the grace period: how long cancelled turns get to store what they have.
SETTLE_SECONDS = 5.0


class ShuttingDown(ServiceUnavailable):
    code = "shutting_down"
    title = "Shutting down"
    default_detail = "This gateway instance is shutting down; retry and another one will answer."


class Ticket:
    """One running turn: the task to cancel at the end of the grace period, and what to tell first."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.stopped = False
        self._on_stop: list[Callable[[], None]] = []

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._on_stop.append(callback)

    def stop(self) -> None:
        self.stopped = True
        for callback in self._on_stop:
            callback()
        self.task.cancel(SHUTDOWN)


def taken_back() -> None:
    """The current task was stopped by the shutdown and answers its client instead of ending:
    withdraw the cancellation request, so later awaits (that answer) run normally."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


class Drain:
    """The process's turns in flight, and whether it is draining. One event loop per process."""

    def __init__(self) -> None:
        self.draining = False
        self._running: set[Ticket] = set()
        self._idle: asyncio.Future[None] | None = None  # made by whoever waits, on their loop
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Raise `ShuttingDown` once draining: the way every new turn is refused."""
        if self.draining:
            raise ShuttingDown()

    @contextlib.contextmanager
    def turn(self, task: asyncio.Task[Any] | None = None) -> Iterator[Ticket]:
        """Hold a turn open for the drain to wait for; `task` is what to cancel (default: this one)."""
        self.check()
        ticket = Ticket(task or asyncio.current_task())  # type: ignore[arg-type]
        self._running.add(ticket)
        try:
            yield ticket
        finally:
            self._running.discard(ticket)
            if not self._running and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)

    def reset(self) -> None:
        """Take turns again (tests; an embedded server that is started anew)."""
        self.draining = False
        self._task = None

    @property
    def running(self) -> int:
        return len(self._running)

    async def drain(self, grace: float) -> None:
        """Refuse new turns, wait up to `grace` seconds for running ones, then cancel the rest."""
        self.draining = True
        logger.warning("draining turns_running=%d grace_seconds=%s", self.running, grace)
        if not await self._wait_idle(grace):
            logger.warning("grace period over; cancelling turns_running=%d", self.running)
            for ticket in list(self._running):
                ticket.stop()
            await self._wait_idle(SETTLE_SECONDS)
        logger.warning("drained turns_running=%d", self.running)

    async def _wait_idle(self, seconds: float) -> bool:
        if not self._running:
            return True
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._idle), seconds)
        except TimeoutError:
            return False
        return True

    def install(self) -> None:
        """Take SIGTERM ahead of the server's handler, which runs once the drain is done.

        Call from the event loop's thread after the server has installed its own
        handlers (the ASGI lifespan start-up is such a place).
        """
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # no server handler to hand over to (not under uvicorn): leave SIGTERM alone

        def hand_over(signum: int, frame: FrameType | None) -> None:
            previous(signum, frame)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self._task is not None:  # a second SIGTERM: leave now
                hand_over(signum, frame)
                return
            loop.call_soon_threadsafe(self._start, lambda: hand_over(signum, frame))

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start(self, then: Callable[[], None]) -> None:
        async def run() -> None:
            try:
                await self.drain(settings.SHUTDOWN_GRACE_SECONDS)
            finally:
                then()

        self._task = asyncio.create_task(run())


drain = Drain()


async def check_not_draining() -> None:
    """A readiness check: fails while draining, so the load balancer stops sending traffic."""
    if drain.draining:
        raise ShuttingDown()
