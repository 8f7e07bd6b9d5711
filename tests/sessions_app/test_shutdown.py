"""Graceful shutdown in process: the drain refuses new turns, waits for running ones, then cuts
them short with `shutting_down`, keeping what was streamed. tests/e2e/test_shutdown.py sends
the real SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from core.shutdown import drain
from llm_backend.fake import FakeChatBackend
from tests.sessions_app.test_api import assert_problem
from tests.sessions_app.test_streaming_api import CONTENT, SseClient, connect, new_session, owner_of, stored
from tests.support import Mint

pytestmark = [pytest.mark.usefixtures("api_settings"), pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_drain() -> Iterator[None]:
    drain.reset()
    yield
    drain.reset()


async def until(condition: object, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_draining_gateway_refuses_turns_but_serves_the_rest(client: httpx.AsyncClient, mint: Mint) -> None:
    session = (await client.post("/api/v1/sessions")).json()
    ws, _ = await connect(mint(), session["id"])

    await drain.drain(grace=0)

    refused = assert_problem(
        await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"}), 503, "shutting_down"
    )
    assert refused["detail"]
    await ws.send_json_to({"type": "message", "content": "hi"})
    assert (await ws.receive_json_from(timeout=5))["code"] == "shutting_down"
    await ws.disconnect()
    assert (await client.get(f"/api/v1/sessions/{session['id']}")).json()["message_count"] == 0
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["accepting_turns"]["error"] == "shutting_down"


async def test_a_stream_that_ends_within_the_grace_period_completes(mint: Mint, backend: FakeChatBackend) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.pause_after = 1
    sse = SseClient(token, session_id, {"content": CONTENT, "stream": True})
    await sse.start()
    assert (await sse.next_event())[0] == "delta"

    draining = asyncio.create_task(drain.drain(grace=30))
    await until(lambda: drain.draining)
    assert not draining.done()  # it waits for the running turn
    backend.resume.set()
    events = [await sse.next_event()]
    while events[-1][0] == "delta":
        events.append(await sse.next_event())
    await asyncio.wait_for(draining, timeout=5)

    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "stop"
    assert [m["status"] for m in await stored(token, session_id)] == ["complete", "complete"]


async def test_after_the_grace_period_a_stream_ends_with_shutting_down_and_keeps_its_part(
    client: httpx.AsyncClient, mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    backend.pause_after = 1
    sse = SseClient(token, session_id, {"content": CONTENT, "stream": True})
    await sse.start()
    first = await sse.next_event()

    await drain.drain(grace=0.05)
    error = await sse.next_event()

    assert first == ("delta", {"content": "Echo: "})
    assert error[0] == "error" and error[1]["code"] == "shutting_down" and error[1]["status"] == 503
    assert await sse.next_event() == ("closed", None)
    assert backend.stream_closed_early.is_set()  # the model was stopped
    assert [(m["content"], m["status"]) for m in await stored(token, session_id)] == [
        (CONTENT, "complete"),
        ("Echo: ", "incomplete"),
    ]
    # The lock was released: once turns are taken again, the session goes on.
    drain.reset()
    backend.pause_after = None
    again = await client.post(
        f"/api/v1/sessions/{session_id}/messages", json={"content": "on"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status_code == 200, again.text


async def test_after_the_grace_period_a_websocket_turn_ends_with_shutting_down(
    mint: Mint, backend: FakeChatBackend
) -> None:
    token = mint()
    session_id = await new_session(owner_of(token))
    ws, _ = await connect(token, session_id)
    backend.pause_after = 1
    await ws.send_json_to({"type": "message", "content": CONTENT})
    first = await ws.receive_json_from(timeout=5)

    await drain.drain(grace=0.05)
    error = await ws.receive_json_from(timeout=5)

    assert first == {"type": "delta", "content": "Echo: "}
    assert error["type"] == "error" and error["code"] == "shutting_down"
    assert [m["status"] for m in await stored(token, session_id)] == ["complete", "incomplete"]
    await ws.disconnect()


async def test_a_json_turn_cut_short_stores_nothing_and_answers_503(
    client: httpx.AsyncClient, mint: Mint, backend: FakeChatBackend
) -> None:
    session = (await client.post("/api/v1/sessions")).json()
    backend.gate = asyncio.Event()  # the model never answers
    turn = asyncio.create_task(client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"}))
    await until(lambda: drain.running == 1)

    await drain.drain(grace=0.05)

    assert_problem(await turn, 503, "shutting_down")
    assert drain.running == 0
    assert (await client.get(f"/api/v1/sessions/{session['id']}")).json()["message_count"] == 0
    drain.reset()
    backend.gate = None
    assert (await client.post(f"/api/v1/sessions/{session['id']}/messages", json={"content": "hi"})).status_code == 200
