"""An in-memory `ChatBackend` for unit tests: scripted answers or failures, and a record of calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from llm_backend.echo import EchoChatBackend
from llm_backend.ports import ChatRequest, Completion, Delta, StreamEvent


@dataclass
class FakeChatBackend:
    """Answers like the echo model unless told otherwise; remembers every request.

    - `fail_with`: calls raise this error (for streams: after `fail_after` deltas);
    - `gate`: each call waits until the test opens it, to hold a turn in flight;
    - `pause_after`: a stream stops after that many deltas until `resume` is set;
    - `stream_closed_early`: set when a consumer stops reading a stream before its end;
    - `open_streams`: streams begun and not yet ended (finished, failed or closed).
    """

    fail_with: Exception | None = None  # a BackendError, or any other error for the unexpected
    fail_after: int = 0
    gate: asyncio.Event | None = None
    pause_after: int | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[ChatRequest] = field(default_factory=list)
    stream_closed_early: asyncio.Event = field(default_factory=asyncio.Event)
    open_streams: int = 0
    _echo: EchoChatBackend = field(default_factory=EchoChatBackend)

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return await self._echo.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.requests.append(request)
        sent = 0
        finished = False
        self.open_streams += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            async for event in self._echo.stream(request):
                if self.fail_with is not None and sent >= self.fail_after:
                    raise self.fail_with
                if sent == self.pause_after:
                    await self.resume.wait()
                yield event
                sent += isinstance(event, Delta)
            finished = True
        finally:
            self.open_streams -= 1
            if not finished:
                self.stream_closed_early.set()

    async def prepare(self) -> None:
        return None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None
