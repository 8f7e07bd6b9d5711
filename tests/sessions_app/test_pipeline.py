"""The turn pipeline on the fakes: admission, the run, what is stored and what is observed."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings as SettingsWrapper

from core.errors import InvalidRequest, RateLimited
from core.shutdown import ShuttingDown, drain
from limits.errors import OwnerStreamLimit
from limits.wiring import get_limiter
from llm_backend.errors import BackendError, BackendUnavailable
from llm_backend.fake import FakeChatBackend
from llm_backend.ports import ContextMessage, Delta, GenerationParams, Role
from sessions_app.admission import TooManyStreams, slots
from sessions_app.domain import MessageStatus
from sessions_app.idempotency import IdempotencyInProgress, IdempotencyKeyReused, IdempotentRequest
from sessions_app.pipeline import (
    StatelessDone,
    StatelessRequest,
    Turn,
    TurnDone,
    TurnEvent,
    TurnFailed,
    TurnRequest,
    admit,
    refuse_if_draining,
)
from sessions_app.wiring import get_idempotency_store, get_session_manager

pytestmark = [pytest.mark.usefixtures("api_settings"), pytest.mark.django_db(transaction=True)]
OWNER = "o_pipeline"
CONTENT = "one two three"
ANSWERED = [(CONTENT, MessageStatus.COMPLETE), (f"Echo: {CONTENT}", MessageStatus.COMPLETE)]


@pytest.fixture(autouse=True)
def fresh_drain() -> Iterator[None]:
    drain.reset()
    yield
    drain.reset()


async def new_session() -> str:
    created = await get_session_manager().lifecycle.session_create(owner=OWNER)
    return created.value.id  # type: ignore[union-attr]


def request_for(session_id: str, content: str = CONTENT, idempotent: IdempotentRequest | None = None) -> TurnRequest:
    return TurnRequest(
        owner=OWNER,
        session_id=session_id,
        content=content,
        params=GenerationParams(),
        request_id="req-1",
        idempotent=idempotent,
    )


async def history(session_id: str) -> list[tuple[str, MessageStatus]]:
    loaded = await get_session_manager().selectors.session_get(owner=OWNER, session_id=session_id)
    return [(m.content, m.status) for m in loaded.value.messages]  # type: ignore[union-attr]


def turns_counted(mode: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("gateway_turns_total", {"mode": mode, "outcome": outcome}) or 0.0


class Rendered:
    """An edge that keeps what it was asked to render."""

    def __init__(self) -> None:
        self.events: list[TurnEvent] = []

    async def __call__(self, event: TurnEvent) -> None:
        self.events.append(event)

    @property
    def deltas(self) -> list[str]:
        return [e.content for e in self.events if isinstance(e, Delta)]


async def stream_whole(turn: Turn, request: TurnRequest) -> Rendered:
    render = Rendered()
    async with turn.stream(request, render):
        await turn.relay(render)
    return render


async def test_a_reply_is_run_committed_and_observed() -> None:
    session_id = await new_session()
    before = turns_counted("json", "ok")
    turn = Turn(mode="json")

    outcome = await turn.reply(request_for(session_id))
    turn.observe()

    assert outcome.message.content == f"Echo: {CONTENT}" and turn.result == outcome
    assert turn.outcome == "ok"
    assert await history(session_id) == ANSWERED
    assert turns_counted("json", "ok") == before + 1
    assert re.fullmatch(r"gateway;dur=\d+\.\d\d, backend;dur=\d+\.\d\d", turn.server_timing())


async def test_a_failed_reply_is_raised_stores_nothing_and_is_observed_with_its_code(
    backend: FakeChatBackend,
) -> None:
    session_id = await new_session()
    backend.fail_with = BackendUnavailable()
    before = turns_counted("json", "backend_unavailable")
    turn = Turn(mode="json")

    with pytest.raises(BackendUnavailable) as raised:
        await turn.reply(request_for(session_id))
    turn.fail(raised.value)
    turn.observe()

    assert turn.outcome == "backend_unavailable" and turn.result is None
    assert await history(session_id) == []
    assert turns_counted("json", "backend_unavailable") == before + 1


async def test_a_stream_renders_each_delta_then_done_and_frees_its_slot() -> None:
    session_id = await new_session()
    turn = Turn(mode="sse")

    render = await stream_whole(turn, request_for(session_id))

    assert "".join(render.deltas) == f"Echo: {CONTENT}"
    done = render.events[-1]
    assert isinstance(done, TurnDone) and done.outcome.finish_reason is not None
    assert turn.outcome == "ok" and turn.result == done.outcome
    assert turn.first_delta_at is not None and turn.first_delta_at >= turn.started
    assert slots.open == 0
    assert await history(session_id) == ANSWERED
    assert re.fullmatch(r'gateway;dur=\d+\.\d\d, backend;desc="first delta";dur=\d+\.\d\d', turn.first_delta_timing())


async def test_a_failure_before_the_first_delta_is_raised_with_nothing_held(backend: FakeChatBackend) -> None:
    session_id = await new_session()
    backend.fail_with = BackendUnavailable()
    turn = Turn(mode="sse")
    render = Rendered()

    with pytest.raises(BackendUnavailable):
        async with turn.stream(request_for(session_id), render):
            raise AssertionError("the stream must not begin")

    assert render.events == [] and turn.running is None and slots.open == 0
    assert (await get_limiter().describe(OWNER))["open_streams"] == 0
    assert await history(session_id) == []


async def test_a_failure_mid_stream_is_rendered_and_keeps_the_partial_as_incomplete(
    backend: FakeChatBackend,
) -> None:
    session_id = await new_session()
    backend.fail_with, backend.fail_after = BackendError(), 2
    turn = Turn(mode="ws")

    render = await stream_whole(turn, request_for(session_id))

    failed = render.events[-1]
    assert isinstance(failed, TurnFailed) and failed.error.code == "backend_error"
    assert turn.outcome == "backend_error"
    assert await history(session_id) == [(CONTENT, MessageStatus.COMPLETE), ("Echo: one ", MessageStatus.INCOMPLETE)]


async def test_the_shutdown_after_the_stream_began_is_rendered_and_keeps_the_part(backend: FakeChatBackend) -> None:
    session_id = await new_session()
    backend.pause_after = 1
    turn = Turn(mode="sse")
    render = Rendered()

    async def run() -> None:
        async with turn.stream(request_for(session_id), render):
            await turn.relay(render)

    running = asyncio.create_task(run())
    while not render.events:
        await asyncio.sleep(0.01)
    await drain.drain(grace=0.05)
    await running  # ends normally: the client is told, not cut off

    last = render.events[-1]
    assert isinstance(last, TurnFailed) and isinstance(last.error, ShuttingDown)
    assert turn.outcome == "shutting_down" and slots.open == 0
    assert await history(session_id) == [(CONTENT, MessageStatus.COMPLETE), ("Echo: ", MessageStatus.INCOMPLETE)]


async def test_the_shutdown_before_the_stream_began_is_raised(backend: FakeChatBackend) -> None:
    session_id = await new_session()
    backend.gate = asyncio.Event()  # the model has not answered yet
    turn = Turn(mode="ws")

    running = asyncio.create_task(stream_whole(turn, request_for(session_id)))
    while not backend.requests:
        await asyncio.sleep(0.01)
    await drain.drain(grace=0.05)

    with pytest.raises(ShuttingDown):
        await running
    assert turn.running is None and await history(session_id) == []


async def test_a_client_that_stops_reading_keeps_the_partial_as_cancelled(backend: FakeChatBackend) -> None:
    session_id = await new_session()
    backend.pause_after = 1
    turn = Turn(mode="sse")
    render = Rendered()

    async def run() -> None:
        async with turn.stream(request_for(session_id), render):
            await turn.relay(render)

    running = asyncio.create_task(run())
    while not render.events:
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert turn.outcome == "cancelled" and slots.open == 0
    assert backend.stream_closed_early.is_set()
    assert await history(session_id) == [(CONTENT, MessageStatus.COMPLETE), ("Echo: ", MessageStatus.CANCELLED)]


async def test_a_stream_its_block_never_relayed_stops_the_model_and_frees_its_lock_and_key(
    backend: FakeChatBackend,
) -> None:
    session_id = await new_session()
    key = IdempotentRequest.of("never-relayed", "turn", session_id, CONTENT)
    turn, render = Turn(mode="sse"), Rendered()

    with pytest.raises(OSError, match="start failed"):
        async with turn.stream(request_for(session_id, idempotent=key), render):
            raise OSError("the response's start failed")  # the client left

    assert backend.stream_closed_early.is_set() and slots.open == 0
    assert render.events == [] and await history(session_id) == []
    # Neither turn_in_progress (the lock) nor idempotency_in_progress (the key): the retry runs.
    again = await stream_whole(Turn(mode="sse"), request_for(session_id, idempotent=key))
    assert isinstance(again.events[-1], TurnDone) and len(backend.requests) == 2
    assert await history(session_id) == ANSWERED


async def test_the_shutdown_before_the_relay_began_is_rendered_and_frees_the_key(backend: FakeChatBackend) -> None:
    session_id = await new_session()
    key = IdempotentRequest.of("stopped-at-head", "turn", session_id, CONTENT)
    turn, render = Turn(mode="sse"), Rendered()
    began = asyncio.Event()

    async def run() -> None:
        async with turn.stream(request_for(session_id, idempotent=key), render):
            began.set()
            await asyncio.Event().wait()  # the stream's head, slow to go out

    running = asyncio.create_task(run())
    await began.wait()
    await drain.drain(grace=0.05)
    await running  # ends normally: the client is told

    last = render.events[-1]
    assert isinstance(last, TurnFailed) and isinstance(last.error, ShuttingDown)
    assert backend.stream_closed_early.is_set() and await history(session_id) == []
    drain.reset()  # another instance, the retry's
    again = await stream_whole(Turn(mode="sse"), request_for(session_id, idempotent=key))
    assert isinstance(again.events[-1], TurnDone) and await history(session_id) == ANSWERED


async def test_admission_refuses_a_draining_instance_the_stream_cap_and_the_owners_limits(
    api_settings: SettingsWrapper,
) -> None:
    session_id = await new_session()
    api_settings.MAX_CONCURRENT_STREAMS = 0
    with pytest.raises(TooManyStreams):
        await stream_whole(Turn(mode="sse"), request_for(session_id))

    api_settings.MAX_CONCURRENT_STREAMS = 10
    limits = {"requests_per_minute": 1, "tokens_per_minute": 0, "streams_per_owner": 1, "sockets_per_owner": 0}
    api_settings.OWNER_LIMITER = {"CLASS": "limits.memory.MemoryLimiter", "OPTIONS": limits}
    await get_limiter().open_stream(OWNER, "another stream")
    with pytest.raises(OwnerStreamLimit):
        await stream_whole(Turn(mode="sse"), request_for(session_id))
    await admit(OWNER)
    with pytest.raises(RateLimited):
        await admit(OWNER)

    await drain.drain(grace=0)
    with pytest.raises(ShuttingDown):
        refuse_if_draining()
    assert await history(session_id) == []


async def test_a_repeated_idempotent_stream_replays_the_first_answer() -> None:
    session_id = await new_session()
    key = IdempotentRequest.of("k-1", "turn", session_id, CONTENT)
    first = await stream_whole(Turn(mode="sse"), request_for(session_id, idempotent=key))

    again = await stream_whole(Turn(mode="sse"), request_for(session_id, idempotent=key))

    assert again.deltas == ["".join(first.deltas)]
    replayed, answered = again.events[-1], first.events[-1]
    assert isinstance(replayed, TurnDone) and isinstance(answered, TurnDone)
    assert replayed.outcome.message.id == answered.outcome.message.id
    assert len(await history(session_id)) == 2  # stored once


# -- stateless turns (OpenAI's Chat Completions) ------------------------------------------


def stateless(content: str = CONTENT, model: str = "echo") -> StatelessRequest:
    return StatelessRequest(
        owner=OWNER,
        model=model,
        messages=(ContextMessage(Role.SYSTEM, "Be brief."), ContextMessage(Role.USER, content)),
        params=GenerationParams(max_tokens=50),
        request_id="req-2",
    )


def tokens_counted(direction: str) -> float:
    return REGISTRY.get_sample_value("gateway_tokens_total", {"model": "echo", "direction": direction}) or 0.0


async def test_a_stateless_turn_asks_the_model_with_the_messages_given_and_stores_nothing(
    backend: FakeChatBackend,
) -> None:
    before_turns, before_tokens = turns_counted("json", "ok"), tokens_counted("output")
    turn = Turn(mode="json")

    completion = (await turn.complete(stateless())).completion
    turn.observe()

    assert completion.content == f"Echo: {CONTENT}"
    assert backend.requests[-1].messages == stateless().messages and backend.requests[-1].request_id == "req-2"
    assert turns_counted("json", "ok") == before_turns + 1
    assert tokens_counted("output") == before_tokens + completion.usage.output_tokens
    assert (await get_session_manager().selectors.session_list(owner=OWNER, limit=10)).value.sessions == ()  # type: ignore[union-attr]


async def test_a_stateless_turn_checks_the_model_and_the_bounds() -> None:
    for request, param in (
        (stateless(model="gpt-nothing"), "model"),
        (dataclasses.replace(stateless(), messages=()), "messages"),
        (dataclasses.replace(stateless(), params=GenerationParams(max_tokens=10**9)), "max_tokens"),
    ):
        with pytest.raises(InvalidRequest) as raised:
            await Turn(mode="json").complete(request)
        assert raised.value.extra["param"] == param


async def test_a_stateless_stream_holds_a_slot_renders_deltas_then_done() -> None:
    turn = Turn(mode="sse")
    render = Rendered()

    async with turn.stream_stateless(stateless(), render):
        assert slots.open == 1
        await turn.relay(render)
    turn.observe()

    assert "".join(render.deltas) == f"Echo: {CONTENT}"
    done = render.events[-1]
    assert isinstance(done, StatelessDone) and done.usage.output_tokens > 0
    assert turn.outcome == "ok" and slots.open == 0 and turn.result is None


async def test_stopping_a_stateless_stream_stops_the_model(backend: FakeChatBackend) -> None:
    backend.pause_after = 1
    turn = Turn(mode="sse")
    render = Rendered()

    async def run() -> None:
        async with turn.stream_stateless(stateless(), render):
            await turn.relay(render)

    running = asyncio.create_task(run())
    while not render.events:
        await asyncio.sleep(0.01)
    running.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await running

    await asyncio.wait_for(backend.stream_closed_early.wait(), 1)
    assert slots.open == 0 and (await get_limiter().describe(OWNER))["open_streams"] == 0


# -- a stateless turn's Idempotency-Key ----------------------------------------------------


def keyed(key: str = "cc-1", request: StatelessRequest | None = None, owner: str = OWNER) -> StatelessRequest:
    request = dataclasses.replace(request or stateless(), owner=owner)
    return dataclasses.replace(request, idempotent=IdempotentRequest.of(key, "chat", request.messages))


async def stream_stateless_whole(request: StatelessRequest) -> Rendered:
    turn, render = Turn(mode="sse"), Rendered()
    async with turn.stream_stateless(request, render):
        await turn.relay(render)
    return render


async def test_a_stateless_stream_its_block_never_relayed_releases_its_key(backend: FakeChatBackend) -> None:
    owner = "o_pipeline_never_relayed"
    turn, render = Turn(mode="sse"), Rendered()

    with pytest.raises(OSError, match="start failed"):
        async with turn.stream_stateless(keyed("cc-never-relayed", owner=owner), render):
            raise OSError("the response's start failed")

    assert backend.stream_closed_early.is_set() and slots.open == 0
    assert await get_idempotency_store().describe(owner) == []
    retried = await stream_stateless_whole(keyed("cc-never-relayed", owner=owner))
    assert "".join(retried.deltas) == f"Echo: {CONTENT}" and len(backend.requests) == 2


async def test_a_repeated_stateless_turn_gets_the_first_answer_without_a_model_call(backend: FakeChatBackend) -> None:
    first = await Turn(mode="json").complete(keyed())
    asked = len(backend.requests)

    again = await Turn(mode="json").complete(keyed())
    streamed = await stream_stateless_whole(keyed())

    assert again == first and len(backend.requests) == asked  # the same answer, its time too
    assert streamed.deltas == [first.completion.content] and isinstance(streamed.events[-1], StatelessDone)
    with pytest.raises(IdempotencyKeyReused):
        await Turn(mode="json").complete(keyed(request=stateless("another question")))
    other = await Turn(mode="json").complete(keyed(owner="o_someone_else"))  # another owner's key is another key
    assert len(backend.requests) == asked + 1 and other.created_at >= first.created_at


async def test_a_stateless_stream_keeps_its_answer_for_the_key_once_the_model_finished(
    backend: FakeChatBackend,
) -> None:
    owner = "o_pipeline_kept"
    first = await stream_stateless_whole(keyed("cc-stream", owner=owner))
    asked = len(backend.requests)

    again = await Turn(mode="json").complete(keyed("cc-stream", owner=owner))

    assert again.completion.content == "".join(first.deltas) == f"Echo: {CONTENT}"
    assert len(backend.requests) == asked
    kept = await get_idempotency_store().describe(owner)
    assert [r["result"]["stateless"]["content"] for r in kept] == [f"Echo: {CONTENT}"]  # the owner's export
    await get_idempotency_store().forget(owner)  # erasure
    assert await get_idempotency_store().describe(owner) == []


async def test_a_stateless_stream_cut_short_releases_its_key(backend: FakeChatBackend) -> None:
    backend.pause_after = 1
    turn, render = Turn(mode="sse"), Rendered()

    async def run() -> None:
        async with turn.stream_stateless(keyed("cc-left"), render):
            await turn.relay(render)

    running = asyncio.create_task(run())
    while not render.events:
        await asyncio.sleep(0.01)
    with pytest.raises(IdempotencyInProgress):  # a repeat meanwhile: the first still runs
        await Turn(mode="json").complete(keyed("cc-left"))
    running.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await running
    backend.pause_after = None
    asked = len(backend.requests)

    retried = await Turn(mode="json").complete(keyed("cc-left"))

    assert retried.completion.content == f"Echo: {CONTENT}" and len(backend.requests) == asked + 1
