"""`SessionManager` rules, on the in-memory store and the fake backend."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import InvalidRequest, PayloadTooLarge
from core.result import Err, Ok
from llm_backend.errors import BackendUnavailable
from llm_backend.fake import FakeChatBackend
from llm_backend.ports import FinishReason, GenerationParams, Role, TokenUsage
from sessions_app.domain import SessionStatus
from sessions_app.errors import (
    ContentTooLarge,
    HistoryMovedOn,
    MessageLimitReached,
    ModelMismatch,
    SessionLimitReached,
    SessionNotActive,
    SessionNotFound,
    TurnInProgress,
    UnknownModel,
)
from sessions_app.services import SessionManager, SessionPolicy
from sessions_app.stores.memory import InMemorySessionStore
from sessions_app.turns import TurnRequest
from tests.sessions_app.builders import fake_manager


@pytest.fixture
def backend() -> FakeChatBackend:
    return FakeChatBackend()


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore()


def manager_with(store: InMemorySessionStore, backend: FakeChatBackend, **policy: object) -> SessionManager:
    return fake_manager(backend, store, SessionPolicy(**policy))  # type: ignore[arg-type]


@pytest.fixture
def manager(store: InMemorySessionStore, backend: FakeChatBackend) -> SessionManager:
    return manager_with(store, backend)


async def new_session(manager: SessionManager, owner: str = "o_alice", **kwargs: object) -> str:
    result = await manager.session_create(owner=owner, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, Ok)
    return result.value.id


def error_of(result: object) -> BaseException:
    assert isinstance(result, Err), result
    return result.error


async def test_create_uses_the_default_model_and_keeps_prompt_and_metadata(manager: SessionManager) -> None:
    result = await manager.session_create(owner="o_alice", system_prompt="Be brief.", metadata={"app": "x"})

    assert isinstance(result, Ok)
    session = result.value
    assert (session.model, session.system_prompt, dict(session.metadata)) == ("echo", "Be brief.", {"app": "x"})
    assert session.status == SessionStatus.ACTIVE and session.message_count == 0


async def test_models_the_gateway_does_not_know_are_unknown_model(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, known_models=frozenset({"small"}))

    refused = error_of(await manager.session_create(owner="o", model="gpt-9"))
    assert isinstance(refused, UnknownModel) and refused.code == "unknown_model" and refused.status == 400
    assert isinstance(await manager.session_create(owner="o", model="small"), Ok)
    assert isinstance(await manager.session_create(owner="o", model="echo"), Ok)  # the default is always known


async def test_with_no_list_only_the_default_model_is_known(manager: SessionManager) -> None:
    hostile = "m" * 100 + "\nlevel=error forged log line " + "x" * 70

    refused = error_of(await manager.session_create(owner="o", model=hostile))

    assert isinstance(refused, UnknownModel) and hostile not in refused.detail
    assert isinstance(await manager.session_create(owner="o"), Ok)


async def test_oversized_metadata_and_prompt_are_refused(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, max_metadata_bytes=20, max_system_prompt_chars=5)

    assert isinstance(error_of(await manager.session_create(owner="o", metadata={"k": "v" * 30})), PayloadTooLarge)
    assert isinstance(error_of(await manager.session_create(owner="o", system_prompt="too long")), ContentTooLarge)


async def test_sessions_per_owner_limit(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, max_sessions_per_owner=1)
    await new_session(manager)

    assert isinstance(error_of(await manager.session_create(owner="o_alice")), SessionLimitReached)
    assert isinstance(await manager.session_create(owner="o_bob"), Ok)


async def test_a_turn_stores_question_and_answer_and_counts_usage(manager: SessionManager, backend) -> None:  # type: ignore[no-untyped-def]
    session_id = await new_session(manager, system_prompt="Be brief.")

    result = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="Hello"))

    assert isinstance(result, Ok)
    outcome = result.value
    assert outcome.message.content == "Echo: Hello" and outcome.message.role == Role.ASSISTANT
    assert outcome.user_message.content == "Hello"
    assert outcome.finish_reason == FinishReason.STOP
    assert outcome.session.message_count == 2
    assert outcome.usage == TokenUsage(input_tokens=3, output_tokens=2)
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok)
    assert [m.content for m in loaded.value.messages] == ["Hello", "Echo: Hello"]
    assert loaded.value.messages == (outcome.user_message, outcome.message)


async def test_the_backend_sees_the_history_model_and_params(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, known_models=frozenset({"tiny"}))
    session_id = await new_session(manager, system_prompt="Be brief.", model="tiny")
    await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="one"))

    await manager.turn_send(
        TurnRequest(
            owner="o_alice",
            session_id=session_id,
            content="two",
            params=GenerationParams(max_tokens=7),
            request_id="r-2",
        )
    )

    request = backend.requests[-1]
    assert request.model == "tiny" and request.request_id == "r-2" and request.params.max_tokens == 7
    assert [(m.role, m.content) for m in request.messages] == [
        (Role.SYSTEM, "Be brief."),
        (Role.USER, "one"),
        (Role.ASSISTANT, "Echo: one"),
        (Role.USER, "two"),
    ]


async def test_instructions_replace_the_system_prompt_for_one_turn_only(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, max_system_prompt_chars=20)
    session_id = await new_session(manager, system_prompt="Be brief.")

    await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="one", instructions="Be French.")
    )
    with_instructions = backend.requests[-1].messages
    await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="two"))
    refused = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="3", instructions="x" * 21)
    )

    assert (with_instructions[0].role, with_instructions[0].content) == (Role.SYSTEM, "Be French.")
    assert (backend.requests[-1].messages[0].role, backend.requests[-1].messages[0].content) == (
        Role.SYSTEM,
        "Be brief.",
    )
    assert isinstance(error_of(refused), ContentTooLarge)
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and loaded.value.session.system_prompt == "Be brief."


async def test_an_edge_may_name_the_turns_message_ids(manager: SessionManager) -> None:
    session_id = await new_session(manager)

    sent = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="a", message_ids=("q1", "a1"))
    )
    streamed = await manager.turn_stream(
        TurnRequest(owner="o_alice", session_id=session_id, content="b", message_ids=("q2", "a2"))
    )
    assert isinstance(sent, Ok) and isinstance(streamed, Ok)
    async for _ in streamed.value.events():
        pass

    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok)
    assert [m.id for m in loaded.value.messages] == ["q1", "a1", "q2", "a2"]


async def test_context_limits_trim_the_history_sent(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, context_max_messages=3)
    session_id = await new_session(manager, system_prompt="")
    for word in ("a", "b", "c"):
        await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content=word))

    await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="d"))

    assert [m.content for m in backend.requests[-1].messages] == ["c", "Echo: c", "d"]


@pytest.mark.parametrize("content", ["", "   \n"])
async def test_empty_content_is_invalid(manager: SessionManager, content: str) -> None:
    session_id = await new_session(manager)

    assert isinstance(
        error_of(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content=content))),
        InvalidRequest,
    )


async def test_content_over_the_limit_is_payload_too_large(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, max_content_chars=10)
    session_id = await new_session(manager)

    error = error_of(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="x" * 11)))

    assert isinstance(error, ContentTooLarge) and error.status == 413
    assert backend.requests == []


async def test_max_tokens_outside_the_policy_is_invalid(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, max_output_tokens=100)
    session_id = await new_session(manager)

    error = error_of(
        await manager.turn_send(
            TurnRequest(owner="o_alice", session_id=session_id, content="x", params=GenerationParams(max_tokens=101))
        )
    )

    assert isinstance(error, InvalidRequest)


async def test_a_backend_failure_stores_nothing_and_frees_the_session(manager: SessionManager, backend) -> None:  # type: ignore[no-untyped-def]
    session_id = await new_session(manager)
    backend.fail_with = BackendUnavailable()

    assert isinstance(
        error_of(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="hi"))),
        BackendUnavailable,
    )

    backend.fail_with = None
    retry = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="hi"))
    assert isinstance(retry, Ok) and retry.value.session.message_count == 2


async def test_a_turn_that_follows_a_message_runs_only_while_it_is_the_newest(manager: SessionManager) -> None:
    session_id = await new_session(manager)
    await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="a", message_ids=("q1", "a1")))

    # Two turns follow a1: the first runs, the second finds the history moved on, both ways.
    assert isinstance(
        await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="b", follows="a1")), Ok
    )
    refused = error_of(
        await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="c", follows="a1"))
    )
    streamed = error_of(
        await manager.turn_stream(TurnRequest(owner="o_alice", session_id=session_id, content="c", follows="a1"))
    )

    assert isinstance(refused, HistoryMovedOn) and isinstance(streamed, HistoryMovedOn)
    loaded = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(loaded, Ok) and [m.content for m in loaded.value.messages][2:] == ["b", "Echo: b"]
    assert isinstance(
        await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="d")), Ok
    )  # lock freed


async def test_a_turn_that_expects_another_model_is_refused_and_stores_nothing(manager: SessionManager) -> None:
    session_id = await new_session(manager)
    got = await manager.session_get(owner="o_alice", session_id=session_id)
    assert isinstance(got, Ok)
    model = got.value.session.model

    refused = error_of(
        await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="a", model="other"))
    )
    streamed = error_of(
        await manager.turn_stream(TurnRequest(owner="o_alice", session_id=session_id, content="a", model="other"))
    )

    assert isinstance(refused, ModelMismatch) and isinstance(streamed, ModelMismatch) and refused.model == model
    loaded = await manager.turn_send(
        TurnRequest(owner="o_alice", session_id=session_id, content="b", model=model)
    )  # lock freed
    assert isinstance(loaded, Ok) and loaded.value.session.message_count == 2


async def test_a_second_message_while_one_is_answered_is_turn_in_progress(manager: SessionManager, backend) -> None:  # type: ignore[no-untyped-def]
    session_id = await new_session(manager)
    backend.gate = asyncio.Event()
    first = asyncio.create_task(manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="first")))
    async with asyncio.timeout(10):  # the first holds the lock (the model is asked): a sleep raced it
        while not backend.requests:
            await asyncio.sleep(0.005)

    second = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="second"))
    backend.gate.set()

    assert isinstance(error_of(second), TurnInProgress)
    assert isinstance(await first, Ok)


async def test_a_cancelled_turn_releases_the_lock_and_stores_nothing(manager: SessionManager, backend) -> None:  # type: ignore[no-untyped-def]
    session_id = await new_session(manager)
    backend.gate = asyncio.Event()
    turn = asyncio.create_task(manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="first")))
    await asyncio.sleep(0.01)

    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn

    backend.gate.set()
    after = await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="again"))
    assert isinstance(after, Ok) and after.value.session.message_count == 2


async def test_the_message_limit_stops_turns_and_frees_the_lock(store, backend) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(store, backend, max_messages_per_session=2)
    session_id = await new_session(manager)
    assert isinstance(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="one")), Ok)

    assert isinstance(
        error_of(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="two"))),
        MessageLimitReached,
    )
    # Still refused for the same reason, not a leftover lock.
    assert isinstance(
        error_of(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="two"))),
        MessageLimitReached,
    )


async def test_an_ended_session_takes_no_more_messages(manager: SessionManager) -> None:
    session_id = await new_session(manager)

    ended = await manager.session_end(owner="o_alice", session_id=session_id)
    again = await manager.session_end(owner="o_alice", session_id=session_id)

    assert isinstance(ended, Ok) and ended.value.status == SessionStatus.ARCHIVED
    assert isinstance(again, Ok)
    assert isinstance(
        error_of(await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="hi"))),
        SessionNotActive,
    )


async def test_another_owner_gets_not_found_everywhere(manager: SessionManager, backend) -> None:  # type: ignore[no-untyped-def]
    session_id = await new_session(manager, owner="o_alice")

    for result in (
        await manager.session_get(owner="o_bob", session_id=session_id),
        await manager.turn_send(TurnRequest(owner="o_bob", session_id=session_id, content="hi")),
        await manager.session_end(owner="o_bob", session_id=session_id),
        await manager.session_delete(owner="o_bob", session_id=session_id),
    ):
        assert isinstance(error_of(result), SessionNotFound)
    assert backend.requests == []
    assert isinstance(await manager.session_get(owner="o_alice", session_id=session_id), Ok)


async def test_delete_makes_the_session_not_found(manager: SessionManager) -> None:
    session_id = await new_session(manager)
    await manager.turn_send(TurnRequest(owner="o_alice", session_id=session_id, content="hi"))

    assert await manager.session_delete(owner="o_alice", session_id=session_id) == Ok(None)

    assert isinstance(error_of(await manager.session_get(owner="o_alice", session_id=session_id)), SessionNotFound)
    page = await manager.session_list(owner="o_alice", limit=10)
    assert isinstance(page, Ok) and page.value.sessions == ()


async def test_list_returns_only_the_owners_sessions_newest_first(manager: SessionManager) -> None:
    first = await new_session(manager)
    await asyncio.sleep(0.002)
    second = await new_session(manager)
    await new_session(manager, owner="o_bob")

    page = await manager.session_list(owner="o_alice", limit=10)

    assert isinstance(page, Ok)
    assert [s.id for s in page.value.sessions] == [second, first]


async def test_a_bad_cursor_is_an_invalid_request_result(manager: SessionManager) -> None:
    assert isinstance(error_of(await manager.session_list(owner="o_alice", limit=10, cursor="%%%")), InvalidRequest)
