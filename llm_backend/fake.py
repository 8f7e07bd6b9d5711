"""An in-memory `ChatBackend` for unit tests: scripted answers or failures, and a record of calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from llm_backend.echo import EchoChatBackend
from llm_backend.errors import BackendError
from llm_backend.ports import ChatRequest, Completion, StreamEvent


@dataclass
class FakeChatBackend:
    """Answers like the echo model unless told to fail; remembers every request.

    `fail_with` makes the next calls raise that error; `gate`, when set, makes
    each call wait until the test opens it, to hold a turn in flight.
    """

    fail_with: BackendError | None = None
    gate: asyncio.Event | None = None
    requests: list[ChatRequest] = field(default_factory=list)
    _echo: EchoChatBackend = field(default_factory=EchoChatBackend)

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return await self._echo.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        async for event in self._echo.stream(request):
            yield event

    async def close(self) -> None:
        return None
