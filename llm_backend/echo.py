"""A deterministic model for development and tests: it echoes the last user message."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from llm_backend.errors import BackendRejected
from llm_backend.ports import ChatRequest, Completion, Delta, FinishReason, Role, StreamEnd, StreamEvent, TokenUsage

_PIECE = re.compile(r"\S+\s*|\s+")
PREFIX = "Echo: "


def reply_for(request: ChatRequest) -> tuple[list[str], FinishReason]:
    """The answer's pieces (one per word, whitespace kept) and why it ended."""
    last_user = next((m.content for m in reversed(request.messages) if m.role == Role.USER), None)
    if last_user is None:
        raise BackendRejected("The context has no user message.")
    text = PREFIX + last_user
    reason = FinishReason.STOP
    for stop in request.params.stop:
        cut = text.find(stop) if stop else -1
        if cut >= 0:
            text = text[:cut]
    pieces = _PIECE.findall(text)
    limit = request.params.max_tokens
    if limit is not None and len(pieces) > limit:
        pieces, reason = pieces[:limit], FinishReason.LENGTH
    return pieces, reason


def count_tokens(request: ChatRequest) -> int:
    """One token per whitespace-separated word: deterministic, not a real tokenizer."""
    return sum(len(m.content.split()) for m in request.messages)


class EchoChatBackend:
    """`ChatBackend` that answers `Echo: <last user message>`, streamed word by word."""

    def __init__(self, *, token_delay: float = 0.0, model: str = "echo") -> None:
        self._delay = token_delay
        self._model = model

    async def complete(self, request: ChatRequest) -> Completion:
        pieces, reason = reply_for(request)
        if self._delay:
            await asyncio.sleep(self._delay * len(pieces))
        return Completion(
            content="".join(pieces),
            finish_reason=reason,
            usage=TokenUsage(input_tokens=count_tokens(request), output_tokens=len(pieces)),
            model=request.model or self._model,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        pieces, reason = reply_for(request)
        for index, piece in enumerate(pieces):
            if self._delay and index:
                await asyncio.sleep(self._delay)  # paced like a model: the first word at once
            yield Delta(piece)
        yield StreamEnd(
            finish_reason=reason,
            usage=TokenUsage(input_tokens=count_tokens(request), output_tokens=len(pieces)),
            model=request.model or self._model,
        )

    async def prepare(self) -> None:
        return None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None
