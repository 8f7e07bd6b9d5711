"""Whether a turn may start: the drain, the owner's rate limits, the per-process stream cap."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from django.conf import settings

from core.errors import GatewayError, ServiceUnavailable
from core.shutdown import drain
from limits.wiring import get_limiter
from sessions_app import metrics


class TooManyStreams(ServiceUnavailable):
    code = "too_many_streams"
    title = "Too many streams"
    default_detail = "The gateway is streaming as many replies as it can; retry shortly."


def refuse_if_draining() -> None:
    """Raise `ShuttingDown` once the instance drains: a draining instance takes no new turns."""
    drain.check()


async def admit(owner: str) -> None:
    """Count the turn against the owner's rate limits (`RateLimited` when over)."""
    await get_limiter().admit(owner)


class StreamSlots:
    """A per-process cap on concurrent streams, so an overload is a fast 503, not a slowdown
    for everyone. One event loop per process: a plain counter is enough. The gauge is set at
    each change rather than read at the scrape (`set_function`): with several workers the
    scrape reads what each worker wrote to its metrics file."""

    def __init__(self) -> None:
        self.open = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.open >= settings.MAX_CONCURRENT_STREAMS:
            raise TooManyStreams()
        self.open += 1
        metrics.OPEN_STREAMS.set(self.open)
        try:
            yield
        finally:
            self.open -= 1
            metrics.OPEN_STREAMS.set(self.open)


slots = StreamSlots()


@asynccontextmanager
async def owner_stream(owner: str) -> AsyncIterator[None]:
    """Count the stream against the owner's limit (across instances) while it runs."""
    stream_id = uuid.uuid4().hex
    limiter = get_limiter()
    await limiter.open_stream(owner, stream_id)
    try:
        yield
    finally:
        with contextlib.suppress(GatewayError):
            await limiter.close_stream(owner, stream_id)
