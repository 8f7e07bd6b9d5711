"""A streamed turn cut short is charged what the model was sent, so cancelling early does not
dodge the tokens-per-minute limit."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import RateLimited
from core.result import Ok
from limits.memory import MemoryLimiter
from llm_backend.fake import FakeChatBackend
from llm_backend.ports import ContextMessage, Delta, Role
from sessions_app.context import estimate_input_tokens
from sessions_app.services import SessionManager
from sessions_app.turns import TurnRequest
from tests.sessions_app.builders import fake_manager

PROMPT = "a long system prompt the model must read before it answers anything " * 20
CONTENT = "a question that costs the model real work to read " * 20


@pytest.fixture
def backend() -> FakeChatBackend:
    return FakeChatBackend()


@pytest.fixture
def limiter() -> MemoryLimiter:
    return MemoryLimiter(tokens_per_minute=500)


@pytest.fixture
def manager(backend: FakeChatBackend, limiter: MemoryLimiter) -> SessionManager:
    return fake_manager(backend, limiter=limiter)


async def new_session(manager: SessionManager) -> str:
    created = await manager.session_create(owner="o_alice", system_prompt=PROMPT)
    assert isinstance(created, Ok)
    return created.value.id


def charged(limiter: MemoryLimiter) -> int:
    return limiter._window("o_alice").tokens


async def settle(manager: SessionManager) -> None:
    await asyncio.gather(*manager.turns.charging)


def test_the_estimate_counts_every_message_sent() -> None:
    sent = [ContextMessage(Role.SYSTEM, "x" * 400), ContextMessage(Role.USER, "y" * 41)]

    assert estimate_input_tokens(sent) == 100 + 11 + 2 * 4


async def test_cancelling_after_one_delta_is_charged_the_input(
    manager: SessionManager, backend: FakeChatBackend, limiter: MemoryLimiter
) -> None:
    session_id = await new_session(manager)
    result = await manager.turn_stream(TurnRequest(owner="o_alice", session_id=session_id, content=CONTENT))
    assert isinstance(result, Ok)
    events = result.value.events()
    assert isinstance(await anext(events), Delta)

    await events.aclose()
    await settle(manager)

    sent = estimate_input_tokens(backend.requests[-1].messages)
    assert sent > 300
    assert charged(limiter) == sent + 1
    assert result.value.outcome is not None and result.value.outcome.usage.input_tokens == sent
    with pytest.raises(RateLimited):  # over the limit now, as after a completed turn
        await limiter.admit("o_alice")


async def test_cancelling_before_the_first_delta_is_charged_the_input(
    manager: SessionManager, backend: FakeChatBackend, limiter: MemoryLimiter
) -> None:
    session_id = await new_session(manager)
    backend.gate = asyncio.Event()  # the model is still reading the prompt

    async def open_stream() -> object:
        return await manager.turn_stream(TurnRequest(owner="o_alice", session_id=session_id, content=CONTENT))

    waiting = asyncio.create_task(open_stream())
    while not backend.requests:
        await asyncio.sleep(0.01)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await settle(manager)

    assert charged(limiter) == estimate_input_tokens(backend.requests[-1].messages) > 300
    with pytest.raises(RateLimited):
        await limiter.admit("o_alice")
