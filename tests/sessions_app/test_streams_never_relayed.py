"""A streamed turn whose relay never began, on real Redis: its client left, or the response's
start failed, once the model's first delta was in but before any event went out. The model is
stopped, the turn lock and the Idempotency-Key are released and nothing is stored, so a retry
with the same key runs (and is not `409 idempotency_in_progress` until the key's claim lapses)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from channels.testing import ApplicationCommunicator
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


async def hang_up(token: str, path: str, body: dict[str, Any], key: str, sends: str) -> None:
    """POST `body` with `key`, then leave at once, before a byte of the answer."""
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"idempotency-key", key.encode()),
    ]
    scope = {
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
    communicator = ApplicationCommunicator(served(application(), sends), scope)
    await communicator.send_input({"type": "http.request", "body": orjson.dumps(body), "more_body": False})
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

    assert backend.stream_closed_early.is_set()  # the model was stopped, not left to run on
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

    assert asked == 5
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

    assert backend.stream_closed_early.is_set()
    assert await get_idempotency_store().describe(owner_of(token)) == []
    retried = await post(token, "/v1/chat/completions", body, "cc-left-1")
    assert retried.status_code == 200, retried.text
    assert retried.content.rstrip().endswith(b"data: [DONE]")
    assert len(backend.requests) == 2


async def test_a_responses_stream_that_never_started_releases_its_key_and_stores_one_turn(
    mint: Mint, backend: FakeChatBackend, sends: str
) -> None:
    token = mint()
    session_id = await new_session(token)
    conversation = "conv_" + session_id.replace("-", "")
    body = {"model": "echo", "input": CONTENT, "conversation": conversation, "stream": True}

    for _ in range(3):
        await hang_up(token, "/v1/responses", body, "resp-left-1", sends)

    assert backend.stream_closed_early.is_set()
    assert await stored(token, session_id) == []
    retried = await post(token, "/v1/responses", body, "resp-left-1")
    assert retried.status_code == 200, retried.text
    assert b"event: response.completed" in retried.content
    assert await stored(token, session_id) == [(CONTENT, "complete"), (f"Echo: {CONTENT}", "complete")]
