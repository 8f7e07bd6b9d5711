"""The `ChatBackend` port and the data objects that cross it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeAlias


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class ContextMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything a stateless model server needs for one answer. No user identity."""

    model: str
    messages: Sequence[ContextMessage]
    params: GenerationParams = field(default_factory=GenerationParams)
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    finish_reason: FinishReason
    usage: TokenUsage
    model: str


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of a streamed answer."""

    content: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of a stream."""

    finish_reason: FinishReason
    usage: TokenUsage
    model: str


StreamEvent: TypeAlias = Delta | StreamEnd


class ChatBackend(Protocol):
    """A model that answers a whole context; it keeps nothing between calls.

    Failures raise `llm_backend.errors.BackendError` subclasses: unavailable,
    timed out, rejected the request, or failed.
    """

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer to `request`."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """The answer as `Delta`s in order, then exactly one `StreamEnd`.

        Closing the iterator early (the client went away) cancels the work
        upstream.
        """
        ...

    async def prepare(self) -> None:
        """Get ready to answer (load a model, warm a connection); called once before serving."""
        ...

    async def check(self) -> None:
        """Raise `BackendUnavailable` unless the model server says it is serving (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
        ...
