"""A streamed turn whose relay never began, on real Redis: its client left, or the response's
start failed, before any event went out: before the model was asked, while it was, or once
its first delta was in. The model is stopped, the turn lock and the Idempotency-Key are
released and nothing is stored, so a retry with the same key runs (and is not `409
idempotency_in_progress` until the key's claim lapses)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from channels.testing import ApplicationCommunicator
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings as SettingsWrapper

from llm_backend.fake import FakeChatBackend
from sessions_app.wiring import get_idempotency_store, get_session_manager
from tests.support import Mint

pytestmark = [pytest.mark.usefixtures("on_redis"), pytest.mark.django_db(transaction=True)]
CONTENT = "one two three"
QUESTION = [{"role": "user", "content": CONTENT}]

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@pytest.fixture
def on_redis(api_settings: SettingsWrapper, redis_url: str, redis_prefix: str) -> None:
    """The sessions (and their turn locks) and the Idempotency-Keys in real Redis."""
    api_settings.ACTIVE_SESSION_STORE = {
        "CLASS": "sessions_app.stores.redis.RedisSessionStore",
        "OPTIONS": {"url": redis_url, "prefix": redis_prefix, "ttl_seconds": 600},
    }
    api_settings.IDEMPOTENCY_STORE = {
        "CLASS": "sessions_app.idempotency.RedisIdempotencyStore",
        "OPTIONS": {"url": redis_url, "prefix": redis_prefix, "pending_seconds": 600},
    }


def application() -> Asgi:
    from config.asgi import application as app

    return app  # type: ignore[no-any-return]


def served(app: Asgi, sends: str) -> Asgi:
    """`app` under a server that, once its client has left, raises on a send (as the ASGI spec
    asks: the response's start fails) or ignores it (as uvicorn does: only the disconnect
    the application reads tells it so)."""
    if sends == "ignored":
        return app

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def gone(message: dict[str, Any]) -> None:
            raise OSError("the client left")

        await app(scope, receive, gone)

    return serve


@pytest.fixture(params=["raise", "ignored"])
def sends(request: pytest.FixtureRequest) -> str:
    """What the server does with a send once the client left."""
    return str(request.param)


def request_scope(token: str, path: str, key: str) -> dict[str, Any]:
    """The scope of a JSON POST to `path` with `token` and Idempotency-Key `key`."""
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"idempotency-key", key.encode()),
    ]
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def hang_up(token: str, path: str, body: dict[str, Any], key: str, sends: str) -> None:
    """POST `body` with `key`, then leave at once, before a byte of the answer. A server that
    raises on a send need not tell the application more: the model is asked, and the response's
    start fails. One that ignores sends says so with a disconnect, which the application reads
    while the turn starts: the model is not even asked."""
    communicator = ApplicationCommunicator(served(application(), sends), request_scope(token, path, key))
    await communicator.send_input({"type": "http.request", "body": orjson.dumps(body), "more_body": False})
    if sends == "ignored":
        await communicator.send_input({"type": "http.disconnect"})
    if sends == "raise":
        with pytest.raises(OSError, match="the client left"):
            await communicator.wait(timeout=5)
    else:
        await communicator.wait(timeout=5)


async def post(token: str, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    transport = httpx.ASGITransport(app=application())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        return await http.post(path, json=body, headers=headers)


def owner_of(token: str) -> str:
    from core.auth.service import get_token_verifier

    return get_token_verifier().verify(token).owner


async def new_session(token: str) -> str:
    created = await get_session_manager().session_create(owner=owner_of(token))
    return created.value.id  # type: ignore[union-attr]


async def stored(token: str, session_id: str) -> list[tuple[str, str]]:
    loaded = await get_session_manager().session_get(owner=owner_of(token), session_id=session_id)
    return [(m.content, m.status.value) for m in loaded.value.messages]  # type: ignore[union-attr]


def sse_names(body: bytes) -> list[str]:
    return [line[7:].decode() for line in body.split(b"\n") if line.startswith(b"event: ")]


# -- the native API's SSE --------------------------------------------------------------


async def test_an_sse_turn_whose_response_never_started_releases_its_key_lock_and_model(
    mint: Mint, backend: FakeChatBackend, sends: str
) -> None:
    token = mint()
    session_id = await new_session(token)
    path = f"/api/v1/sessions/{session_id}/messages"
    body = {"content": CONTENT, "stream": True}

    await hang_up(token, path, body, "sse-left-1", sends)

    assert backend.open_streams == 0  # the model was stopped, not left to run on
    assert backend.stream_closed_early.is_set() if sends == "raise" else backend.requests == []
    assert await stored(token, session_id) == []  # the client saw nothing: nothing was kept
    assert await get_idempotency_store().describe(owner_of(token)) == []  # the key is free
    retried = await post(token, path, body, "sse-left-1")
    assert retried.status_code == 200, retried.text
    assert sse_names(retried.content)[-1] == "done"
    assert await stored(token, session_id) == [(CONTENT, "complete"), (f"Echo: {CONTENT}", "complete")]


async def test_without_a_key_the_turn_lock_is_released_at_once(mint: Mint, sends: str) -> None:
    token = mint()
    session_id = await new_session(token)
    path = f"/api/v1/sessions/{session_id}/messages"

    await hang_up(token, path, {"content": CONTENT, "stream": True}, "sse-left-2", sends)
    after = await post(token, path, {"content": "another"})  # no key: only the lock could refuse it

    assert after.status_code == 200, after.text
    assert [content for content, _ in await stored(token, session_id)] == ["another", "Echo: another"]


async def test_a_client_that_hangs_up_again_and_again_then_retries_stores_one_turn(
    mint: Mint, backend: FakeChatBackend, sends: str
) -> None:
    token = mint()
    session_id = await new_session(token)
    path = f"/api/v1/sessions/{session_id}/messages"
    body = {"content": CONTENT, "stream": True}

    for _ in range(5):
        await hang_up(token, path, body, "sse-hostile", sends)
    asked = len(backend.requests)
    retried = await post(token, path, body, "sse-hostile")
    again = await post(token, path, body, "sse-hostile")  # now a repeat: the first answer, no model call

    assert asked == (5 if sends == "raise" else 0) and backend.open_streams == 0
    assert retried.status_code == again.status_code == 200
    assert sse_names(retried.content)[-1] == sse_names(again.content)[-1] == "done"
    assert len(backend.requests) == asked + 1
    assert await stored(token, session_id) == [(CONTENT, "complete"), (f"Echo: {CONTENT}", "complete")]


# -- /v1 streams -----------------------------------------------------------------------


async def test_a_chat_completions_stream_that_never_started_releases_its_key(
    mint: Mint, backend: FakeChatBackend, sends: str
) -> None:
    token = mint()
    body = {"model": "echo", "messages": QUESTION, "stream": True}

    await hang_up(token, "/v1/chat/completions", body, "cc-left-1", sends)

    assert backend.open_streams == 0
    assert backend.stream_closed_early.is_set() if sends == "raise" else backend.requests == []
    assert await get_idempotency_store().describe(owner_of(token)) == []
    retried = await post(token, "/v1/chat/completions", body, "cc-left-1")
    assert retried.status_code == 200, retried.text
    assert retried.content.rstrip().endswith(b"data: [DONE]")
    assert len(backend.requests) == (2 if sends == "raise" else 1)


async def test_a_responses_stream_that_never_started_releases_its_key_and_stores_one_turn(
    mint: Mint, backend: FakeChatBackend, sends: str
) -> None:
    token = mint()
    session_id = await new_session(token)
    conversation = "conv_" + session_id.replace("-", "")
    body = {"model": "echo", "input": CONTENT, "conversation": conversation, "stream": True}

    for _ in range(3):
        await hang_up(token, "/v1/responses", body, "resp-left-1", sends)

    assert backend.open_streams == 0
    assert backend.stream_closed_early.is_set() if sends == "raise" else backend.requests == []
    assert await stored(token, session_id) == []
    retried = await post(token, "/v1/responses", body, "resp-left-1")
    assert retried.status_code == 200, retried.text
    assert b"event: response.completed" in retried.content
    assert await stored(token, session_id) == [(CONTENT, "complete"), (f"Echo: {CONTENT}", "complete")]


# -- a client that leaves while the model's first delta is awaited ----------------------


def stream_body(edge: str, session_id: str) -> tuple[str, dict[str, Any]]:
    """The path and body of a streamed turn on `edge` (in the session, for those that have one)."""
    if edge == "sse":
        return f"/api/v1/sessions/{session_id}/messages", {"content": CONTENT, "stream": True}
    if edge == "responses":
        conversation = "conv_" + session_id.replace("-", "")
        return "/v1/responses", {"model": "echo", "input": CONTENT, "conversation": conversation, "stream": True}
    return "/v1/chat/completions", {"model": "echo", "messages": QUESTION, "stream": True}


@pytest.fixture(params=["sse", "responses", "chat"])
def edge(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def turns_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("gateway_turns_total", {"mode": "sse", "outcome": outcome}) or 0.0


async def asked_of_the_model(backend: FakeChatBackend, count: int) -> None:
    async with asyncio.timeout(5):
        while len(backend.requests) < count:
            await asyncio.sleep(0.005)


async def open_stream(token: str, path: str, body: dict[str, Any], key: str) -> ApplicationCommunicator:
    communicator = ApplicationCommunicator(application(), request_scope(token, path, key))
    await communicator.send_input({"type": "http.request", "body": orjson.dumps(body), "more_body": False})
    return communicator


async def leave(communicator: ApplicationCommunicator) -> None:
    """The client leaves; the application must end (the model never answers: only the leaving
    ends it) without answering, as there is nobody to read it."""
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=5)  # cancels the application after 5 s
    assert not communicator.future.cancelled(), "the application ran on after its client left"
    assert await communicator.receive_nothing()


async def test_a_client_that_leaves_before_the_first_delta_stops_the_model_and_frees_lock_and_key(
    mint: Mint, backend: FakeChatBackend, edge: str
) -> None:
    token = mint()
    session_id = await new_session(token)
    path, body = stream_body(edge, session_id)
    backend.gate = asyncio.Event()  # shut: the first delta never comes
    cancelled, failed = turns_counted("cancelled"), turns_counted("internal_error")

    thinking = await open_stream(token, path, body, f"{edge}-thinking")
    await asked_of_the_model(backend, 1)
    await leave(thinking)

    assert backend.stream_closed_early.is_set() and backend.open_streams == 0  # the model call was cancelled
    assert (turns_counted("cancelled"), turns_counted("internal_error")) == (cancelled + 1, failed)
    assert await stored(token, session_id) == []
    assert await get_idempotency_store().describe(owner_of(token)) == []  # the key is free
    backend.gate = None
    retried = await post(token, path, body, f"{edge}-thinking")  # not turn_in_progress, nor in progress
    assert retried.status_code == 200, retried.text
    assert len(backend.requests) == 2
    if edge != "chat":
        assert await stored(token, session_id) == [(CONTENT, "complete"), (f"Echo: {CONTENT}", "complete")]


async def test_many_clients_leaving_before_the_first_delta_leave_no_lock_key_or_model_call(
    mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(token)
    path, body = stream_body("sse", session_id)
    chat, question = stream_body("chat", session_id)
    backend.gate = asyncio.Event()

    for n in range(10):  # one after another on one session and key: each finds lock and key free
        thinking = await open_stream(token, path, body, "sse-thinking-again")
        await asked_of_the_model(backend, n + 1)
        await leave(thinking)
    together = [await open_stream(token, chat, question, f"chat-{n}") for n in range(10)]
    await asked_of_the_model(backend, 20)  # the owner's 16 streams would refuse some, had any been kept
    await asyncio.gather(*(leave(thinking) for thinking in together))

    assert backend.open_streams == 0
    assert await get_idempotency_store().describe(owner_of(token)) == []
    backend.gate = None
    retried = await post(token, path, body, "sse-thinking-again")
    assert retried.status_code == 200, retried.text
    assert await stored(token, session_id) == [(CONTENT, "complete"), (f"Echo: {CONTENT}", "complete")]
