"""Streaming as clients meet it: SSE over real HTTP and WebSockets against uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.conftest import Gateway, StartGateway
from tests.support import ObservedModel

pytestmark = pytest.mark.e2e
TRICKY = 'He said "hi"\nand left \\ twice'


@pytest.fixture(scope="module")
def observed() -> Iterator[ObservedModel]:
    model = ObservedModel(token_delay=0.05).start()
    yield model
    model.stop()


@pytest.fixture(scope="module")
def observed_gateway(start_gateway: StartGateway, observed: ObservedModel) -> Gateway:
    return start_gateway(observed.target)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs as they arrive; comments are skipped."""
    event: str | None = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            yield event, orjson.loads(line[6:])
            event = None


def new_session(gateway: Gateway, token: str) -> str:
    with gateway.client(token) as http:
        return str(http.post("/api/v1/sessions").json()["id"])


def stored(gateway: Gateway, token: str, session_id: str) -> list[dict[str, Any]]:
    with gateway.client(token) as http:
        return list(http.get(f"/api/v1/sessions/{session_id}").json()["messages"])


def ws_url(gateway: Gateway, session_id: str) -> str:
    return gateway.base_url.replace("http://", "ws://") + f"/ws/v1/sessions/{session_id}"


def ws_turn(ws: ClientConnection) -> list[dict[str, Any]]:
    frames = []
    while True:
        frames.append(orjson.loads(ws.recv(timeout=10)))
        if frames[-1]["type"] in ("done", "error"):
            return frames


def test_sse_conversation_arrives_delta_by_delta_and_intact(any_gateway: Gateway) -> None:
    token = any_gateway.dev_token(sub="sse-user")
    session_id = new_session(any_gateway, token)
    replies = []
    with any_gateway.client(token) as http:
        for content in (TRICKY, "second turn"):
            with http.stream(
                "POST", f"/api/v1/sessions/{session_id}/messages", json={"content": content, "stream": True}
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                events = list(sse_events(response))
            replies.append(events)

    first = replies[0]
    deltas = [data["content"] for name, data in first if name == "delta"]
    assert len(deltas) > 3 and "".join(deltas) == f"Echo: {TRICKY}"
    assert first[-1][0] == "done" and first[-1][1]["message"]["content"] == f"Echo: {TRICKY}"
    assert replies[1][-1][1]["usage"]["input_tokens"] > first[-1][1]["usage"]["input_tokens"]
    assert [m["content"] for m in stored(any_gateway, token, session_id)] == [
        TRICKY,
        f"Echo: {TRICKY}",
        "second turn",
        "Echo: second turn",
    ]


def test_websocket_conversation_with_the_token_as_subprotocol(any_gateway: Gateway) -> None:
    token = any_gateway.dev_token(sub="ws-user")
    session_id = new_session(any_gateway, token)

    with connect(ws_url(any_gateway, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"
        ws.send(orjson.dumps({"type": "message", "content": TRICKY}).decode())
        first = ws_turn(ws)
        ws.send(orjson.dumps({"type": "message", "content": "again"}).decode())
        second = ws_turn(ws)

    assert "".join(f["content"] for f in first if f["type"] == "delta") == f"Echo: {TRICKY}"
    assert first[-1]["type"] == "done" and first[-1]["finish_reason"] == "stop"
    assert second[-1]["message"]["content"] == "Echo: again"
    assert len(stored(any_gateway, token, session_id)) == 4


def test_websocket_with_the_token_as_query_parameter(gateway: Gateway) -> None:
    token = gateway.dev_token(sub="ws-query")
    session_id = new_session(gateway, token)

    with connect(ws_url(gateway, session_id) + f"?access_token={token}") as ws:
        ws.send(orjson.dumps({"type": "message", "content": "hello"}).decode())
        assert ws_turn(ws)[-1]["message"]["content"] == "Echo: hello"


@pytest.mark.parametrize(("case", "code"), [("none", 4401), ("bad", 4401), ("read_only", 4403), ("foreign", 4404)])
def test_websocket_auth_failures_close_before_any_content(gateway: Gateway, case: str, code: int) -> None:
    owner = gateway.dev_token(sub="ws-owner")
    session_id = new_session(gateway, owner)
    token = {
        "none": None,
        "bad": "x.y.z",
        "read_only": gateway.dev_token(sub="ws-owner", scope="chat.read"),
        "foreign": gateway.dev_token(sub="ws-stranger"),
    }[case]
    subprotocols = ["bearer", token] if token else None

    with (
        connect(ws_url(gateway, session_id), subprotocols=subprotocols) as ws,  # type: ignore[arg-type]
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


def wait_until(condition: Any, timeout: float) -> float:
    """Seconds it took `condition()` to hold; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_websocket_cancel_stops_the_model_at_once(observed_gateway: Gateway, observed: ObservedModel) -> None:
    token = observed_gateway.dev_token(sub="canceller")
    session_id = new_session(observed_gateway, token)
    observed.reset()
    long_text = " ".join(["word"] * 200)  # 10 s at the model's pace

    with connect(ws_url(observed_gateway, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(orjson.dumps({"type": "message", "content": long_text}).decode())
        for _ in range(3):
            assert orjson.loads(ws.recv(timeout=5))["type"] == "delta"
        ws.send('{"type": "cancel"}')
        frames = ws_turn(ws)

    wait_until(observed.cancelled.is_set, timeout=1.0)
    produced = observed.produced
    time.sleep(0.3)
    assert observed.produced == produced < 20  # it stopped producing
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled"
    assert stored(observed_gateway, token, session_id)[-1]["status"] == "cancelled"


def test_an_sse_client_that_goes_away_stops_the_model(observed_gateway: Gateway, observed: ObservedModel) -> None:
    token = observed_gateway.dev_token(sub="leaver")
    session_id = new_session(observed_gateway, token)
    observed.reset()
    long_text = " ".join(["word"] * 200)

    with (
        observed_gateway.client(token) as http,
        http.stream(
            "POST", f"/api/v1/sessions/{session_id}/messages", json={"content": long_text, "stream": True}
        ) as response,
    ):
        events = sse_events(response)
        seen = [next(events) for _ in range(3)]
    # Leaving the block closed the connection mid-stream.

    wait_until(observed.cancelled.is_set, timeout=1.0)
    assert [name for name, _ in seen] == ["delta"] * 3
    messages = wait_for_messages(observed_gateway, token, session_id, 2)
    assert messages[-1]["status"] == "cancelled"
    assert messages[-1]["content"].startswith("".join(data["content"] for _, data in seen))


def wait_for_messages(gateway: Gateway, token: str, session_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        messages = stored(gateway, token, session_id)
        if len(messages) >= count:
            return messages
        time.sleep(0.05)
    pytest.fail("the partial reply was not stored")


def test_a_websocket_client_that_goes_away_stops_the_model(observed_gateway: Gateway, observed: ObservedModel) -> None:
    token = observed_gateway.dev_token(sub="ws-leaver")
    session_id = new_session(observed_gateway, token)
    observed.reset()

    with connect(ws_url(observed_gateway, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(orjson.dumps({"type": "message", "content": " ".join(["word"] * 200)}).decode())
        ws.recv(timeout=5)

    wait_until(observed.cancelled.is_set, timeout=1.0)
    assert wait_for_messages(observed_gateway, token, session_id, 2)[-1]["status"] == "cancelled"


def test_a_model_failure_mid_stream_is_an_error_event(observed_gateway: Gateway, observed: ObservedModel) -> None:
    token = observed_gateway.dev_token(sub="unlucky-stream")
    session_id = new_session(observed_gateway, token)
    observed.reset()

    with (
        observed_gateway.client(token) as http,
        http.stream(
            "POST",
            f"/api/v1/sessions/{session_id}/messages",
            json={"content": "one two three four FAIL_AFTER_3 five", "stream": True},
        ) as response,
    ):
        events = list(sse_events(response))

    assert [name for name, _ in events] == ["delta", "delta", "delta", "error"]
    assert events[-1][1]["code"] == "backend_error"
    last = stored(observed_gateway, token, session_id)[-1]
    assert (last["content"], last["status"]) == ("Echo: one two ", "incomplete")


def test_a_turn_over_http_while_the_websocket_streams_is_refused(
    observed_gateway: Gateway, observed: ObservedModel
) -> None:
    token = observed_gateway.dev_token(sub="two-devices")
    session_id = new_session(observed_gateway, token)

    with connect(ws_url(observed_gateway, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(orjson.dumps({"type": "message", "content": " ".join(["word"] * 40)}).decode())
        ws.recv(timeout=5)
        with observed_gateway.client(token) as http:
            refused = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "me too", "stream": True})
            ws.send(orjson.dumps({"type": "message", "content": "and me"}).decode())
            frames = ws_turn(ws)

    assert refused.status_code == 409 and refused.json()["code"] == "turn_in_progress"
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "turn_in_progress"


def test_an_sse_client_that_hangs_up_at_once_again_and_again_then_retries_stores_one_turn(
    observed_gateway: Gateway, observed: ObservedModel
) -> None:
    token = observed_gateway.dev_token(sub="hanger-up")
    session_id = new_session(observed_gateway, token)
    path = f"/api/v1/sessions/{session_id}/messages"
    body = orjson.dumps({"content": "one two three", "stream": True})
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nIdempotency-Key: hung-up-1\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    observed.reset()

    for _ in range(5):
        with observed_gateway.connect() as raw:
            raw.sendall(head.encode() + body)  # and gone before a byte of the answer

    with observed_gateway.client(token) as http:
        answered: list[tuple[str, Any]] = []

        def retried() -> bool:  # the client's retry of 409 idempotency_in_progress, while one still runs
            with http.stream("POST", path, json={"content": "one two three", "stream": True},
                             headers={"Idempotency-Key": "hung-up-1"}) as response:  # fmt: skip
                if response.status_code == 409:
                    response.read()
                    assert response.json()["code"] == "idempotency_in_progress"
                    return False
                assert response.status_code == 200
                answered.extend(sse_events(response))
                return True

        wait_until(retried, timeout=10)

    # Each hang-up was seen before the model was asked, or stopped its call: none answers nobody.
    wait_until(lambda: observed.streaming == 0, timeout=5)
    assert answered[-1][0] == "done" and answered[-1][1]["finish_reason"] == "stop"
    assert [(m["content"], m["status"]) for m in stored(observed_gateway, token, session_id)] == [
        ("one two three", "complete"),
        ("Echo: one two three", "complete"),
    ]


def streamed_turn(edge: str, session_id: str) -> tuple[str, dict[str, Any]]:
    """The path and body of a streamed turn on `edge` (in the session, for those that have one)."""
    if edge == "sse":
        return f"/api/v1/sessions/{session_id}/messages", {"content": "one two three", "stream": True}
    if edge == "responses":
        conversation = "conv_" + session_id.replace("-", "")
        return "/v1/responses", {
            "model": "echo",
            "input": "one two three",
            "conversation": conversation,
            "stream": True,
        }
    return "/v1/chat/completions", {
        "model": "echo",
        "messages": [{"role": "user", "content": "one two"}],
        "stream": True,
    }


async def leave_while_the_model_thinks(
    gateway: Gateway, observed: ObservedModel, token: str, path: str, body: dict[str, Any], key: str
) -> None:
    """Open the streamed turn with httpx and close the connection once the model has the call,
    before its first delta (which the model holds back)."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=30) as http:
        waiting = asyncio.create_task(http.post(path, json=body))  # the head never comes
        while not observed.started.is_set():
            assert not waiting.done(), waiting.result()
            await asyncio.sleep(0.01)
        waiting.cancel()  # httpx closes a connection cut short mid-response
        with contextlib.suppress(asyncio.CancelledError):
            await waiting


@pytest.mark.parametrize("edge", ["sse", "responses", "chat"])
def test_a_client_that_leaves_before_the_first_delta_stops_the_model_and_frees_the_session(
    observed_gateway: Gateway, observed: ObservedModel, edge: str
) -> None:
    token = observed_gateway.dev_token(sub=f"early-leaver-{edge}")
    session_id = new_session(observed_gateway, token)
    path, body = streamed_turn(edge, session_id)
    failures = observed_gateway.process.output().count("Exception in ASGI application")
    observed.reset()
    observed.hold.set()

    asyncio.run(leave_while_the_model_thinks(observed_gateway, observed, token, path, body, f"{edge}-early"))

    wait_until(observed.cancelled.is_set, timeout=5)  # stopped, not left to think for nobody
    observed.hold.clear()
    with observed_gateway.client(token) as http:

        def retried() -> httpx.Response | None:
            # At once (not when the turn lock or the key's claim lapses, in minutes): the gateway
            # releases them as the model's call is cancelled, so at most a moment apart.
            response = http.post(path, json=body, headers={"Idempotency-Key": f"{edge}-early"})
            if response.status_code == 409:
                assert response.json()["code"] in ("turn_in_progress", "idempotency_in_progress"), response.text
                return None
            return response

        answered = wait_until_returned(retried, timeout=5)

    assert answered.status_code == 200, answered.text
    assert observed.calls == 2  # the retry asked the model again: nothing was kept for the key
    assert observed_gateway.process.output().count("Exception in ASGI application") == failures
    if edge != "chat":
        assert [(m["content"], m["status"]) for m in stored(observed_gateway, token, session_id)] == [
            ("one two three", "complete"),
            ("Echo: one two three", "complete"),
        ]


def test_a_websocket_client_that_leaves_before_the_first_delta_stops_the_model_and_frees_the_session(
    observed_gateway: Gateway, observed: ObservedModel
) -> None:
    """The socket closed while the model thinks (its first delta held back): the call is
    cancelled, nothing is stored, and the session's next turn runs at once, not when the turn
    lock lapses."""
    token = observed_gateway.dev_token(sub="ws-early-leaver")
    session_id = new_session(observed_gateway, token)
    failures = observed_gateway.process.output().count("Exception in ASGI application")
    observed.reset()
    observed.hold.set()

    with connect(ws_url(observed_gateway, session_id), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        ws.send(orjson.dumps({"type": "message", "content": "one two three"}).decode())
        wait_until(observed.started.is_set, timeout=5)
    # Leaving the block closed the socket before any frame came.

    wait_until(observed.cancelled.is_set, timeout=5)
    observed.hold.clear()
    with observed_gateway.client(token) as http:

        def next_turn() -> httpx.Response | None:
            response = http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "four five"})
            if response.status_code == 409:  # at most a moment: the lock goes as the call is cancelled
                assert response.json()["code"] == "turn_in_progress", response.text
                return None
            return response

        answered = wait_until_returned(next_turn, timeout=5)

    assert answered.status_code == 200, answered.text
    assert observed.calls == 2
    assert [(m["content"], m["status"]) for m in stored(observed_gateway, token, session_id)] == [
        ("four five", "complete"),
        ("Echo: four five", "complete"),
    ]
    assert observed_gateway.process.output().count("Exception in ASGI application") == failures


def wait_until_returned(attempt: Any, timeout: float) -> Any:
    """What `attempt()` returned first that was not None; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (value := attempt()) is None:
        if time.monotonic() > deadline:
            pytest.fail("no answer in time")
        time.sleep(0.02)
    return value
