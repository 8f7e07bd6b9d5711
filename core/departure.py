"""A client's leaving, seen by its edge, stopping the wait for the model's first event.

An HTTP edge watches its client from the moment it starts a streamed turn
(`core.http_edge`), but cannot answer until the model's first event is in (its status
code depends on it). It lends the turn its `Departure` (`lent`), and the one wait that may
be stopped (`until_departure`, around the model's first event) is cancelled the moment
the client leaves. Only that wait: a step before it (claiming an Idempotency-Key, taking
the turn lock, in Redis) cancelled between its command and the reply would leave what it
took held until it lapses, and takes a round trip where the model takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


class ClientGone(Exception):
    """The client left before its response began (or its request was answered already, as a
    body too large is): there is nothing more to send."""


class Departure:
    """Whether the edge's client has left, and the task to stop when it does."""

    __slots__ = ("left", "stopped", "waiting")

    def __init__(self) -> None:
        self.left = False
        self.stopped = False  # `waiting` was cancelled for it: the edge takes the cancellation back
        self.waiting: asyncio.Task[object] | None = None

    def leave(self) -> None:
        self.left = True
        if self.waiting is not None:
            self.stopped = True
            self.waiting.cancel()
            self.waiting = None


_lent: ContextVar[Departure | None] = ContextVar("departure", default=None)


@contextlib.contextmanager
def lent(departure: Departure) -> Iterator[None]:
    """Within: `until_departure` waits stop when `departure`'s client leaves."""
    token = _lent.set(departure)
    try:
        yield
    finally:
        _lent.reset(token)


async def until_departure(wait: Awaitable[T]) -> T:
    """`await wait`, cancelled if the client of the departure lent leaves meanwhile (the edge
    turns that into `ClientGone`); `ClientGone` at once, `wait` never begun, if it left already."""
    departure = _lent.get()
    if departure is None:
        return await wait
    if departure.left:
        raise ClientGone()
    departure.waiting = asyncio.current_task()
    try:
        return await wait
    finally:
        departure.waiting = None
