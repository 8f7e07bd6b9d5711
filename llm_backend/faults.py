"""Fault injection for the reference model server: a testing aid, never for production.

`manage.py serve_backend --first-delta-delay / --fail-calls / --fail-with /
--fail-after-deltas` wraps the served adapter in `FaultyChatBackend`, so tests
that run a real model server (tests/e2e/faults) can make it slow or failing on
demand. The failures are the adapter's typed errors, so the server answers them
with the status codes a real model server would (UNAVAILABLE, INTERNAL, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from llm_backend.errors import BackendError, BackendRejected, BackendTimeout, BackendUnavailable
from llm_backend.ports import ChatBackend, ChatRequest, Completion, Delta, StreamEvent

# --fail-with: the adapter error raised, and so the gRPC status the server answers.
FAILURES: dict[str, type[BackendError]] = {
    "unavailable": BackendUnavailable,  # UNAVAILABLE: transient, the gateway may retry it
    "timeout": BackendTimeout,  # DEADLINE_EXCEEDED
    "rejected": BackendRejected,  # INVALID_ARGUMENT
    "error": BackendError,  # INTERNAL
}


class FaultyChatBackend:
    """Delegates to `inner`, with faults:

    - `first_delta_delay`: seconds every call waits before answering at all;
    - `fail_calls`: the first this-many calls (complete or stream) fail with `fail_with`;
    - `fail_after_deltas`: a failing stream sends this many deltas first (0: fails before any).
    """

    def __init__(
        self,
        inner: ChatBackend,
        *,
        first_delta_delay: float = 0.0,
        fail_calls: int = 0,
        fail_with: str = "unavailable",
        fail_after_deltas: int = 0,
    ) -> None:
        if fail_with not in FAILURES:
            raise ValueError(f"fail_with must be one of {', '.join(FAILURES)}")
        if first_delta_delay < 0 or fail_calls < 0 or fail_after_deltas < 0:
            raise ValueError("fault options must not be negative")
        self._inner = inner
        self._delay = first_delta_delay
        self._fail_calls = fail_calls
        self._error = FAILURES[fail_with]
        self._fail_after = fail_after_deltas
        self.calls = 0

    def _next_call_fails(self) -> bool:
        self.calls += 1
        return self.calls <= self._fail_calls

    def _failure(self) -> BackendError:
        return self._error("Injected failure (serve_backend --fail-calls).")

    async def complete(self, request: ChatRequest) -> Completion:
        fails = self._next_call_fails()
        if self._delay:
            await asyncio.sleep(self._delay)
        if fails:
            raise self._failure()
        return await self._inner.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        fails = self._next_call_fails()
        if self._delay:
            await asyncio.sleep(self._delay)
        sent = 0
        events = self._inner.stream(request)
        try:
            async for event in events:
                if fails and sent >= self._fail_after:
                    raise self._failure()
                yield event
                sent += isinstance(event, Delta)
        finally:
            await events.aclose()

    async def prepare(self) -> None:
        await self._inner.prepare()

    async def check(self) -> None:
        await self._inner.check()

    async def close(self) -> None:
        await self._inner.close()
