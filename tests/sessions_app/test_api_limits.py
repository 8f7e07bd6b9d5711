"""Per-owner limits and Idempotency-Key through the HTTP and WebSocket edges, in process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from llm_backend.fake import FakeChatBackend
from tests.sessions_app.test_api import assert_problem
from tests.sessions_app.test_streaming_api import SseClient, connect, new_session, owner_of
from tests.support import Mint

pytestmark = pytest.mark.django_db(transaction=True)


def limits(settings: SettingsWrapper, **values: int) -> None:
    settings.OWNER_LIMITER = {
        "CLASS": "limits.memory.MemoryLimiter",
        "OPTIONS": {"requests_per_minute": 0, "tokens_per_minute": 0, "streams_per_owner": 0, **values},
    }


def assert_retry_after(response: httpx.Response) -> None:
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_requests_beyond_the_minute_are_429_on_every_edge(
    client: httpx.AsyncClient, api_settings: SettingsWrapper, mint: Mint
) -> None:
    session = (await client.post("/api/v1/sessions")).json()
    ws, _ = await connect(mint(), session["id"])  # connecting is not a request against the limit
    limits(api_settings, requests_per_minute=2)
    assert (await client.get("/api/v1/sessions")).status_code == 200
    assert (await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"})).status_code == 200

    listing = await client.get("/api/v1/sessions")
    turn = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "again"})
    await ws.send_json_to({"type": "message", "content": "by socket"})
    frame = await ws.receive_json_from(timeout=5)

    for response in (listing, turn):
        assert_problem(response, 429, "rate_limited")
        assert_retry_after(response)
    assert frame["type"] == "error" and frame["code"] == "rate_limited"
    await ws.disconnect()
    # Another owner has a minute of their own.
    other = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {mint(sub='bob')}"})
    assert other.status_code == 200
    limits(api_settings)
    assert (await client.get(f"/api/v1/sessions/{session['id']}")).json()["message_count"] == 2


async def test_model_tokens_beyond_the_minute_are_429(client: httpx.AsyncClient, api_settings: SettingsWrapper) -> None:
    limits(api_settings, tokens_per_minute=5)
    session = (await client.post("/api/v1/sessions")).json()
    first = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "one two three"})
    spent = first.json()["usage"]
    assert spent["input_tokens"] + spent["output_tokens"] >= 5
    await asyncio.sleep(0.05)  # the tokens are counted just after the reply, off its path

    refused = await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "more"})

    assert_problem(refused, 429, "rate_limited")
    assert "tokens" in refused.json()["detail"]


async def test_streams_beyond_the_owners_limit_are_429_until_one_ends(
    client: httpx.AsyncClient, api_settings: SettingsWrapper, mint: Mint, backend: FakeChatBackend
) -> None:
    limits(api_settings, streams_per_owner=1)
    token = mint()
    first_session, second_session = await new_session(owner_of(token)), await new_session(owner_of(token))
    backend.pause_after = 1
    running = SseClient(token, first_session, {"content": "hold on", "stream": True})
    await running.start()
    assert (await running.next_event())[0] == "delta"

    refused = await client.post(f"/api/v1/sessions/{second_session}/messages", json={"content": "hi", "stream": True})
    ws, _ = await connect(token, second_session)
    await ws.send_json_to({"type": "message", "content": "hi"})
    frame = await ws.receive_json_from(timeout=5)
    backend.resume.set()
    while (await running.next_event())[0] != "closed":
        pass
    await running.communicator.wait(timeout=5)  # the consumer has finished, its stream freed
    backend.pause_after = None
    await ws.send_json_to({"type": "message", "content": "now"})
    frames = [await ws.receive_json_from(timeout=5)]
    while frames[-1]["type"] == "delta":
        frames.append(await ws.receive_json_from(timeout=5))
    await ws.disconnect()

    assert_problem(refused, 429, "owner_stream_limit")
    assert refused.headers["retry-after"] == "1"
    assert frame["type"] == "error" and frame["code"] == "owner_stream_limit"
    assert frames[-1]["type"] == "done", frames


async def turn(client: httpx.AsyncClient, session_id: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/api/v1/sessions/{session_id}/messages", json=body, headers={"Idempotency-Key": key})


async def test_a_repeated_turn_with_its_key_is_answered_once(
    client: httpx.AsyncClient, backend: FakeChatBackend
) -> None:
    session = (await client.post("/api/v1/sessions")).json()
    calls = len(backend.requests)

    first = await turn(client, session["id"], "turn-1", {"content": "hello"})
    repeat = await turn(client, session["id"], "turn-1", {"content": "hello"})
    streamed_repeat = await turn(client, session["id"], "turn-1", {"content": "hello", "stream": True})
    changed = await turn(client, session["id"], "turn-1", {"content": "something else"})

    assert first.status_code == repeat.status_code == 200
    assert repeat.json() == first.json()
    assert streamed_repeat.status_code == 200 and first.json()["message"]["content"] in streamed_repeat.text
    assert_problem(changed, 422, "idempotency_key_reused")
    assert len(backend.requests) == calls + 1  # one model call
    assert (await client.get(f"/api/v1/sessions/{session['id']}")).json()["message_count"] == 2  # one append


async def test_a_repeated_session_creation_with_its_key_creates_one(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "create-1"}
    first = await client.post("/api/v1/sessions", json={"system_prompt": "Be brief."}, headers=key)
    repeat = await client.post("/api/v1/sessions", json={"system_prompt": "Be brief."}, headers=key)
    changed = await client.post("/api/v1/sessions", json={"system_prompt": "Be long."}, headers=key)
    bad_key = await client.post("/api/v1/sessions", headers={"Idempotency-Key": "tab\there"})

    assert first.status_code == repeat.status_code == 201
    assert repeat.json()["id"] == first.json()["id"]
    assert_problem(changed, 422, "idempotency_key_reused")
    assert_problem(bad_key, 400, "invalid_request")
    assert len((await client.get("/api/v1/sessions")).json()["results"]) == 1


async def test_websockets_per_owner_are_capped_and_freed_on_close(api_settings: SettingsWrapper, mint: Mint) -> None:
    """Idle sockets count too: the owner's third is closed with 4429; closing one frees a slot."""
    from channels.testing import WebsocketCommunicator

    from tests.sessions_app.test_streaming_api import application

    limits(api_settings, sockets_per_owner=2)
    token = mint()
    session_id = await new_session(owner_of(token))
    first, _ = await connect(token, session_id)
    second, _ = await connect(token, session_id)
    others, _ = await connect(mint(sub="bob"), await new_session(owner_of(mint(sub="bob"))))

    third = WebsocketCommunicator(application(), f"/ws/v1/sessions/{session_id}", subprotocols=["bearer", token])
    await third.connect(timeout=5)
    refused = await third.receive_output(timeout=5)
    await first.disconnect()
    fourth, _ = await connect(token, session_id)
    await fourth.send_json_to({"type": "message", "content": "still works"})
    frame = await fourth.receive_json_from(timeout=5)

    assert refused == {"type": "websocket.close", "code": 4429}
    assert frame["type"] == "delta"
    for ws in (second, others, fourth):
        await ws.disconnect()
